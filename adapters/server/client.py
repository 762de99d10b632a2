"""`ServerClient`: a prefect ``Client`` bound to one server, with no global state.

``prefect.Client`` falls back to prefect's global config, to the
``~/.prefect/auth.toml`` cache and to the global ``backend`` setting (to find a
tenant), and retries a failing request for about a minute. This subclass takes
everything from a `PrefectServerConfig`, never touches the user's home, and
turns transport failures into `BackendUnavailableError` quickly.

The operations lume-scheduling uses (tenant, projects, registration, flow runs,
cancel) are its own, so that every answer is checked against what its request
asked for (`_answers`) instead of being read with box lookups that fail with
``BoxKeyError``, ``AttributeError`` or ``IndexError`` on a malformed answer.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional, Union
from urllib.parse import urljoin

import prefect
import requests
from prefect.exceptions import AuthorizationError, ClientError
from prefect.utilities.graphql import GraphQLResult, compress, parse_graphql

from lume_scheduling.domain import BackendUnavailableError

from . import _answers as answers
from .config import PrefectServerConfig

JSON = Any


class UnknownProjectError(ValueError):
    """`ServerClient.register` was given a project the server does not have."""


class ServerClient(prefect.Client):
    """A prefect ``Client`` whose every setting comes from a `PrefectServerConfig`.

    Args:
        config: The server to talk to.

    Only these methods are used (each its own, not prefect's): ``answer``,
    ``register``, ``create_project``, ``create_flow_run``, ``cancel_flow_run``.
    Each raises `_answers.MalformedAnswer` for an answer that is not what it
    asked for, and prefect's ``ClientError`` for an answer with GraphQL errors.
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
            data = self._data({"query": {"tenant": {"id"}}}, answers.TENANTS)
            if not data["tenant"]:
                raise ClientError("the Prefect Server has no tenant: run `prefect server create-tenant`")
            self._tenant_id = data["tenant"][0]["id"]
        return self._tenant_id  # type: ignore[return-value]

    @tenant_id.setter
    def tenant_id(self, tenant_id: Union[str, uuid.UUID, None]) -> None:
        self._tenant_id = None if not tenant_id else str(uuid.UUID(str(tenant_id)))

    # ------------------------------------------------------------- GraphQL

    def graphql(  # type: ignore[override]
        self,
        query: Any,
        raise_on_error: bool = True,
        headers: Optional[Dict[str, str]] = None,
        variables: Optional[Mapping[str, Any]] = None,
        api_key: Optional[str] = None,
        retry_on_api_error: bool = True,
    ) -> GraphQLResult:
        """As ``prefect.Client.graphql`` (a box, for prefect's own client methods,
        which tests call), with the answer checked as `answer` checks it."""
        return GraphQLResult(
            self.answer(query, raise_on_error, headers, variables, api_key, retry_on_api_error)
        )

    def answer(
        self,
        query: Any,
        raise_on_error: bool = True,
        headers: Optional[Dict[str, str]] = None,
        variables: Optional[Mapping[str, Any]] = None,
        api_key: Optional[str] = None,
        retry_on_api_error: bool = True,
    ) -> Dict[str, Any]:
        """Send one GraphQL request; its answer, checked as GraphQL answers are shaped.

        Args:
            query: The GraphQL, as text or in prefect's dict form.
            raise_on_error: Raise for an answer with errors (else return it).
            headers, api_key, retry_on_api_error: As for ``prefect.Client.graphql``.
            variables: The query's variables.

        Returns:
            The answer as plain JSON (no box): ``data`` is an object, unless it
            has errors and ``raise_on_error`` is False.

        Raises:
            AuthorizationError: The server refused the credentials.
            ClientError: The answer has errors (the server's messages).
            MalformedAnswer: The answer is not a GraphQL answer (not an object,
                ``errors`` that are not a list of messages, no ``data`` object).
            BackendUnavailableError: Transport failures (see `_request`).
        """
        answer = self.post(
            path="",
            server=self.api_server,
            headers=headers,
            params=dict(query=parse_graphql(query), variables=json.dumps(variables)),
            api_key=api_key,
            retry_on_api_error=retry_on_api_error,
        )
        data, errors = answers.envelope(answer)
        if errors is not None and raise_on_error:
            text = str(errors)
            if "UNAUTHENTICATED" in text or "Malformed Authorization header" in text:
                raise AuthorizationError(errors)
            raise ClientError(errors)
        return answer

    def _data(self, query: Any, shape: answers.Shape, variables: Optional[Mapping[str, Any]] = None, **options: Any) -> Dict[str, Any]:
        """The ``data`` of a request's answer, checked against ``shape``."""
        answer = self.answer(query, variables=variables, **options)
        return answers.read(answer["data"], shape)

    # ---------------------------------------------------------- operations

    def create_project(self, project_name: str, project_description: Optional[str] = None) -> str:
        """Create a project unless one of that name exists; its id either way.

        Raises:
            ClientError, MalformedAnswer: See `answer`.
        """
        try:
            data = self._data(
                "mutation($input: create_project_input!) { create_project(input: $input) { id } }",
                answers.CREATED_PROJECT,
                {"input": {"name": project_name, "description": project_description, "tenant_id": self.tenant_id}},
            )
        except ClientError as err:
            # The server's answer for a project that exists (api/projects.py).
            if "Uniqueness violation" not in str(err):
                raise
            existing = self._project_ids(project_name)
            if not existing:
                raise
            return existing[0]
        return str(data["create_project"]["id"])

    def _project_ids(self, project_name: str) -> List[str]:
        data = self._data(
            "query($name: String!) { project(where: {name: {_eq: $name}}) { id } }",
            answers.PROJECTS,
            {"name": project_name},
        )
        return [row["id"] for row in data["project"]]

    def register(  # type: ignore[override]
        self,
        flow: Any,
        project_name: str,
        build: bool = True,
        set_schedule_active: bool = True,
        version_group_id: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        no_url: bool = True,
    ) -> str:
        """Register ``flow`` as prefect's ``Client.register`` does (compressed flow,
        then its tasks and edges in batches of 500, then its schedule), and return
        the new flow's id. Nothing is printed (``no_url`` is taken for prefect's
        signature; `ServerBackend` prints its own note).

        Raises:
            UnknownProjectError: No project of that name.
            ValueError: The flow cannot be
                serialized; it has a schedule and required parameters without
                defaults (nothing is sent for these).
            ClientError, MalformedAnswer: See `answer`.
        """
        required = {parameter.name for parameter in flow.parameters() if parameter.required}
        if flow.schedule is not None and required:
            if not all(required <= set(clock.parameter_defaults) for clock in flow.schedule.clocks):
                raise ValueError(
                    f"flow {flow.name!r} has a schedule and required parameters "
                    f"({', '.join(sorted(required))}) that its clocks give no defaults"
                )
        projects = self._project_ids(project_name)
        if not projects:
            raise UnknownProjectError(f"Project {project_name} not found")
        serialized = flow.serialize(build=build)
        try:
            prefect.serialization.flow.FlowSchema().load(serialized)
        except Exception as err:  # marshmallow raises several types for a bad document
            raise ValueError(f"flow {flow.name!r} cannot be deserialized after serialization: {err!r}") from err
        tasks = serialized.pop("tasks")
        edges = serialized.pop("edges")
        inputs: Dict[str, Any] = {
            "project_id": projects[0],
            "serialized_flow": compress(serialized),
            # Scheduling waits until every task is registered.
            "set_schedule_active": False,
            "version_group_id": version_group_id,
        }
        if idempotency_key is not None:
            inputs["idempotency_key"] = idempotency_key
        data = self._data(
            "mutation($input: create_flow_from_compressed_string_input!) "
            "{ create_flow_from_compressed_string(input: $input) { id } }",
            answers.CREATED_FLOW,
            {"input": inputs},
            retry_on_api_error=False,
        )
        flow_id = str(data["create_flow_from_compressed_string"]["id"])
        for start in range(0, len(tasks), _BATCH):
            self._data(
                "mutation($input: register_tasks_input!) { register_tasks(input: $input) { success } }",
                answers.REGISTERED_TASKS,
                {"input": {"flow_id": flow_id, "serialized_tasks": tasks[start : start + _BATCH]}},
            )
        for start in range(0, len(edges), _BATCH):
            self._data(
                "mutation($input: register_edges_input!) { register_edges(input: $input) { success } }",
                answers.REGISTERED_EDGES,
                {"input": {"flow_id": flow_id, "serialized_edges": edges[start : start + _BATCH]}},
            )
        if set_schedule_active:
            self._data(
                "mutation($input: set_schedule_active_input!) { set_schedule_active(input: $input) { success } }",
                answers.SCHEDULE_SET,
                {"input": {"flow_id": flow_id}},
            )
        return flow_id

    def create_flow_run(  # type: ignore[override]
        self,
        flow_id: str,
        parameters: Optional[Mapping[str, Any]] = None,
        run_config: Any = None,
        labels: Optional[List[str]] = None,
        idempotency_key: Optional[str] = None,
    ) -> str:
        """Create a flow run of ``flow_id``; its id.

        Args:
            flow_id: The flow.
            parameters: The run's parameters.
            run_config: A prefect ``RunConfig`` for the run.
            labels: The run's labels (else the server takes its run config's).
            idempotency_key: A request with the key of an earlier one creates no
                new run (a unique key by default).

        Raises:
            ClientError, MalformedAnswer: See `answer`.
        """
        # An idempotency key, as prefect sends: a retried request creates no second run.
        inputs: Dict[str, Any] = {"flow_id": flow_id, "idempotency_key": idempotency_key or uuid.uuid4().hex}
        if labels is not None:
            inputs["labels"] = list(labels)
        if parameters is not None:
            inputs["parameters"] = dict(parameters)
        if run_config is not None:
            inputs["run_config"] = run_config.serialize()
        data = self._data(
            "mutation($input: create_flow_run_input!) { create_flow_run(input: $input) { id } }",
            answers.CREATED_FLOW_RUN,
            {"input": inputs},
        )
        return str(data["create_flow_run"]["id"])

    def cancel_flow_run(self, flow_run_id: str) -> Optional[str]:  # type: ignore[override]
        """Ask the server to cancel a flow run; the state it answers with.

        Raises:
            ClientError, MalformedAnswer: See `answer`.
        """
        data = self._data(
            "mutation($input: cancel_flow_run_input!) { cancel_flow_run(input: $input) { state } }",
            answers.CANCELLED,
            {"input": {"flow_run_id": flow_run_id}},
        )
        return data["cancel_flow_run"]["state"]

    # ------------------------------------------------------------ transport

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


_BATCH = 500  # tasks or edges a registration request carries, as prefect sends them


def _body(response: requests.Response, limit: int = 300) -> str:
    text = (response.text or "").strip() or response.reason or "empty answer"
    return text if len(text) <= limit else text[:limit] + "..."


def _has_graphql_errors(response: requests.Response) -> bool:
    try:
        answer = response.json()
    except ValueError:
        return False
    return isinstance(answer, dict) and "errors" in answer


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
