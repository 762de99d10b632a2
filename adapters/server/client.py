"""`ServerClient`: a prefect ``Client`` bound to one server, with no global state.

``prefect.Client`` falls back to prefect's global config, to the
``~/.prefect/auth.toml`` cache and to the global ``backend`` setting (to find a
tenant), and retries a failing request for about a minute. This subclass takes
everything from a `PrefectServerConfig`, never touches the user's home, and
turns transport failures into `BackendUnavailableError` quickly.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, Optional, Union
from urllib.parse import urljoin

import prefect
import requests
from prefect.exceptions import ClientError

from lume_scheduling.domain import BackendUnavailableError

from .config import PrefectServerConfig

JSON = Any


class ServerClient(prefect.Client):
    """A prefect ``Client`` whose every setting comes from a `PrefectServerConfig`.

    Args:
        config: The server to talk to.

    Only the GraphQL methods of ``prefect.Client`` are used through it
    (``graphql``, ``register``, ``create_project``, ``create_flow_run``,
    ``cancel_flow_run``).
    """

    def __init__(self, config: PrefectServerConfig) -> None:
        self._config = config
        self.requests_sent = 0
        super().__init__(
            api_server=config.api_url, api_key=config.api_key_value(), tenant_id=config.tenant_id
        )
        # Client.__init__ falls back to prefect's config for a missing key or tenant;
        # ours says exactly what to use.
        self.api_key = config.api_key_value()
        self._tenant_id = config.tenant_id

    def __repr__(self) -> str:
        return f"ServerClient(api_url={self._config.api_url!r})"

    # prefect's on-disk credential cache lives under the user's home: never used.
    def load_auth_from_disk(self) -> Dict[str, str]:
        return {}

    def save_auth_to_disk(self) -> None:
        raise NotImplementedError("lume-scheduling never writes prefect credentials to disk")

    @property  # type: ignore[override]
    def tenant_id(self) -> str:
        """The configured tenant, else the server's first tenant (asked once)."""
        if not self._tenant_id:
            result = self.graphql({"query": {"tenant": {"id"}}})
            tenants = result.get("data", {}).get("tenant") or []
            if not tenants:
                raise ClientError("the Prefect Server has no tenant: run `prefect server create-tenant`")
            self._tenant_id = tenants[0].id
        return self._tenant_id  # type: ignore[return-value]

    @tenant_id.setter
    def tenant_id(self, tenant_id: Union[str, uuid.UUID, None]) -> None:
        self._tenant_id = None if not tenant_id else str(uuid.UUID(str(tenant_id)))

    def _request(
        self,
        method: str,
        path: str,
        params: Optional[Dict[str, JSON]] = None,
        server: Optional[str] = None,
        headers: Optional[dict] = None,
        api_key: Optional[str] = None,
        retry_on_api_error: bool = True,
    ) -> requests.Response:
        """Send one request with this config's time-out and retries.

        Raises:
            BackendUnavailableError: The server refused, timed out, or answered
                with an HTTP error other than a GraphQL 400 (whose errors the
                caller reads).
        """
        url = urljoin(server or self.api_server, path.lstrip("/")).rstrip("/")
        headers = dict(headers or {})
        key = api_key or self.api_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
            if self._tenant_id:
                headers["X-PREFECT-TENANT-ID"] = self._tenant_id
        headers["X-PREFECT-CORE-VERSION"] = str(prefect.__version__)
        headers.update(self._attached_headers)
        config = self._config
        delay = config.request_backoff
        problem = "no attempt made"
        for attempt in range(config.request_retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                self.requests_sent += 1
                with requests.Session() as session:
                    response = session.request(
                        method,
                        url,
                        headers=headers,
                        json=params if method != "GET" else None,
                        params=params if method == "GET" else None,
                        timeout=config.request_timeout,
                    )
            except requests.Timeout:
                problem = f"no answer within {config.request_timeout:g} s"
                continue
            except requests.ConnectionError as err:
                problem = f"cannot connect ({_root_cause(err)})"
                continue
            except requests.RequestException as err:
                raise BackendUnavailableError(config.api_url, f"request failed: {err}") from err
            if response.status_code >= 500:
                problem = f"HTTP {response.status_code}: {_body(response)}"
                continue
            if response.status_code in (401, 403):
                raise BackendUnavailableError(
                    config.api_url, f"not authorised (HTTP {response.status_code}): {_body(response)}"
                )
            if response.status_code >= 400 and not _has_graphql_errors(response):
                raise BackendUnavailableError(
                    config.api_url, f"HTTP {response.status_code}: {_body(response)}"
                )
            try:
                response.json()
            except ValueError:
                raise BackendUnavailableError(
                    config.api_url, f"the answer is not JSON: {_body(response)}"
                ) from None
            return response
        raise BackendUnavailableError(
            config.api_url, f"{problem} (after {config.request_retries + 1} attempts)"
        )


def _body(response: requests.Response, limit: int = 300) -> str:
    text = (response.text or "").strip() or response.reason or "empty answer"
    return text if len(text) <= limit else text[:limit] + "..."


def _has_graphql_errors(response: requests.Response) -> bool:
    try:
        return "errors" in response.json()
    except ValueError:
        return False


def _root_cause(err: BaseException) -> str:
    """The innermost reason of a connection error (refused, name not known...)."""
    seen = err
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    reason = getattr(err, "args", ("",))[0]
    inner = getattr(reason, "reason", None)
    return str(inner or seen or err)


def graphql_message(err: ClientError) -> str:
    """The messages of a GraphQL error answer, joined."""
    detail = err.args[0] if err.args else err
    if isinstance(detail, list):
        messages = [str(item.get("message", item)) if isinstance(item, dict) else str(item) for item in detail]
        return "; ".join(messages)
    return str(detail)
