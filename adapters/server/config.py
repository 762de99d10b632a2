"""`PrefectServerConfig`: how a server backend reaches its Prefect 1 Server; and
`PrefectConfig`, the same settings in lume-services' shape (``server``, ``ui``,
``agent``, ... with ``host``/``host_port`` fields), turned into a
`PrefectServerConfig` by `server_config_from` without touching any global
config."""

from __future__ import annotations

import uuid
import warnings
from typing import Any, Dict, Mapping, Optional
from urllib.parse import urlparse

from pydantic import BaseModel, Extra, Field, SecretStr, root_validator, validator

from lume_scheduling.domain.image import image_reference_problem


def _checked_default_image(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    problem = image_reference_problem(value)
    if problem:
        raise ValueError(f"default_image {value!r} is not a valid Docker image reference: {problem}")
    return value


class PrefectServerConfig(BaseModel):
    """Connection and polling settings of one Prefect 1 Server.

    Each backend builds its own client from these; nothing is read from or written
    to prefect's global config or the user's home.

    Attributes:
        api_url: The server's GraphQL endpoint (``http(s)://host:port[/graphql]``).
        api_key: Sent as a bearer token when set; never shown in a repr or log.
        tenant_id: The tenant (a UUID); None asks the server for its first tenant.
        default_image: Image flows run in when ``register_flow`` gets none; a valid
            Docker image reference.
        ui_url: The server's UI, for the flow address ``register_flow`` prints.
        request_timeout: Seconds one HTTP request may take.
        request_retries: Extra attempts after a refused connection, a time-out or
            an HTTP 5xx answer.
        request_backoff: Seconds before the first retry; doubles each time.
        poll_interval: Seconds before the first state query of a run.
        poll_backoff: Factor the interval grows by after each query that finds
            the run in the same state (so a run is seen ended at most about as
            late as it had run, and never more than ``poll_max_interval``).
        poll_max_interval: The longest interval between two state queries (the
            same 10 s as prefect's ``watch_flow_run``).
        cancel_timeout: Seconds ``cancel`` waits for the run to reach Cancelled.
        log_tail_quiet: After a run's final state, its logs are read on until
            no new line has come for this many seconds: prefect's runner ships
            its logs in batches, and its last batch lands after the final state.
            Shortened to 0.5 s once the flow runner's closing line ("Flow run
            SUCCESS..." or "Flow run FAILED...") has arrived, since every line
            before it came in the same or an earlier batch. 0 reads no more.
        log_tail_max: The longest the logs are read on after the final state,
            however much keeps coming.
        agent_check_after: Seconds a run may stay scheduled before the backend
            asks the server whether a live agent would be handed it (one query,
            one warning naming the run's labels and the agents seen); None
            never asks.
        agent_stale_after: Seconds after its last poll of the server (the agent
            row's ``last_queried``) that an agent no longer counts as running for
            that check: a real server keeps the rows of agents that died.
        resurrection_attempt_limit: How many times the server's Lazarus process
            reschedules a run whose process stopped before failing it (the
            server's ``services.lazarus.resurrection_attempt_limit``, 3 by
            default); only said in the progress message ("attempt 1 of 3").
        task_run_page_size: Task runs fetched per query (the server caps pages).

    lume-services' field names are accepted too (its ``PrefectServerConfig``):
    ``host`` and ``host_port`` make ``api_url`` (``"{host}:{host_port}"``, the
    address prefect's client used there; either may be left out: the defaults
    are lume-services', ``http://localhost`` and ``4200``); ``tag`` and
    ``host_ip`` configure the server's own containers, which lume-scheduling
    never starts, so they are accepted and dropped. They cannot be read back:
    the config holds ``api_url`` only.
    """

    api_url: str = "http://localhost:4200/graphql"
    api_key: Optional[SecretStr] = None
    tenant_id: Optional[str] = None
    default_image: Optional[str] = None
    ui_url: Optional[str] = None
    request_timeout: float = 15.0
    request_retries: int = 2
    request_backoff: float = 0.5
    poll_interval: float = 1.0
    poll_backoff: float = 2.0
    poll_max_interval: float = 10.0
    cancel_timeout: float = 30.0
    log_tail_quiet: float = 2.0
    log_tail_max: float = 15.0
    agent_check_after: Optional[float] = 15.0
    agent_stale_after: float = 60.0
    resurrection_attempt_limit: int = 3
    task_run_page_size: int = 1000

    class Config:
        extra = Extra.forbid
        allow_mutation = False

    @root_validator(pre=True)
    def _lume_services_names(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        values = dict(values)
        for unused in LUME_SERVICES_SERVER_UNUSED:
            values.pop(unused, None)
        given = {name: values.pop(name) for name in ("host", "host_port") if name in values}
        if not given:
            return values
        if values.get("api_url") is not None:
            raise ValueError(
                "give api_url or lume-services' host and host_port, not both "
                f"(host/host_port would make {_endpoint(**given)!r})"
            )
        values["api_url"] = _endpoint(**given)
        return values

    @validator("api_url", "ui_url")
    def _check_url(cls, value: Optional[str], field: Any) -> Optional[str]:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{field.name} must be an http(s) URL with a host, not {value!r}")
        return value

    @validator("tenant_id")
    def _check_tenant(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"tenant_id must be a UUID, not {value!r}") from None

    _check_image = validator("default_image", allow_reuse=True)(_checked_default_image)

    @validator(
        "request_timeout", "poll_interval", "poll_max_interval", "cancel_timeout", "agent_check_after",
        "agent_stale_after",
    )
    def _check_positive(cls, value: Optional[float], field: Any) -> Optional[float]:
        if value is not None and not value > 0:
            raise ValueError(f"{field.name} must be a positive number of seconds, not {value!r}")
        return value

    @validator("request_backoff")
    def _check_backoff(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"request_backoff cannot be negative, not {value!r}")
        return value

    @validator("request_retries")
    def _check_retries(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"request_retries cannot be negative, not {value!r}")
        return value

    @validator("log_tail_quiet", "log_tail_max")
    def _check_tail(cls, value: float, field: Any) -> float:
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{field.name} must be a finite number of seconds, 0 or more, not {value!r}")
        return value

    @validator("poll_backoff")
    def _check_poll_backoff(cls, value: float) -> float:
        if value < 1:
            raise ValueError(f"poll_backoff must be at least 1, not {value!r}")
        return value

    @validator("resurrection_attempt_limit")
    def _check_resurrections(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"resurrection_attempt_limit cannot be negative, not {value!r}")
        return value

    @validator("task_run_page_size")
    def _check_page(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"task_run_page_size must be at least 1, not {value!r}")
        return value

    @root_validator(skip_on_failure=True)
    def _check_intervals(cls, values: dict) -> dict:
        if values["poll_max_interval"] < values["poll_interval"]:
            raise ValueError("poll_max_interval cannot be below poll_interval")
        return values

    def api_key_value(self) -> Optional[str]:
        """The API key in clear, for the Authorization header only."""
        return None if self.api_key is None else self.api_key.get_secret_value()


# lume-services' PrefectServerConfig fields that configure the server's own
# containers (image tag, bind address): no client setting corresponds to them.
LUME_SERVICES_SERVER_UNUSED = ("tag", "host_ip")


def _endpoint(host: Any = "http://localhost", host_port: Any = "4200", *, field: str = "") -> str:
    """``"{host}:{host_port}"``, as lume-services built prefect's endpoint, checked.

    Raises:
        ValueError: ``host`` is not ``http(s)://name`` without a port or path, or
            ``host_port`` is not a port number.
    """
    prefix = f"{field}." if field else ""
    if not isinstance(host, str):
        raise ValueError(f"{prefix}host must be a string such as 'http://localhost', not {type(host).__name__}")
    parsed = urlparse(host)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.port or parsed.path.strip("/"):
        raise ValueError(
            f"{prefix}host must be a scheme and a host name such as 'http://localhost' "
            f"(the port goes in host_port), not {host!r}"
        )
    if isinstance(host_port, bool) or not isinstance(host_port, (int, str)):
        raise ValueError(f"{prefix}host_port must be a port number, not {type(host_port).__name__}")
    port = str(host_port).strip()
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{prefix}host_port must be a port number (1-65535), not {host_port!r}")
    return f"{host.rstrip('/')}:{int(port)}"


class _LumeServicesPart(BaseModel):
    class Config:
        extra = Extra.forbid
        allow_mutation = False


class PrefectUIConfig(_LumeServicesPart):
    """lume-services' ``PrefectUIConfig``: where the Prefect UI is.

    ``host`` and ``host_port`` make `PrefectServerConfig.ui_url` (the flow
    address ``register_flow`` prints); ``host_ip`` and ``apollo_url`` configure
    the UI's container and are not used.
    """

    host: str = "http://localhost"
    host_port: str = "8080"
    host_ip: str = "127.0.0.1"
    apollo_url: str = "http://localhost:4200/graphql"

    @root_validator(skip_on_failure=True)
    def _check_address(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        _endpoint(values["host"], values["host_port"], field="ui")
        return values

    def url(self) -> str:
        """``"{host}:{host_port}"``."""
        return _endpoint(self.host, self.host_port, field="ui")


class PrefectAgentConfig(_LumeServicesPart):
    """lume-services' ``PrefectAgentConfig`` (an agent's health endpoint); not used:
    agents are started and configured on their own."""

    host: str = "http://localhost"
    host_port: str = "5000"


class PrefectTelemetryConfig(_LumeServicesPart):
    """lume-services' ``PrefectTelemetryConfig`` (the server's telemetry); not used."""

    enabled: bool = True


class PrefectConfig(_LumeServicesPart):
    """lume-services' ``PrefectConfig``, field for field, for services migrating
    with their configuration as it is: ``DockerBackend(config=PrefectConfig(...))``.

    Nothing global happens: the original's ``apply()`` changed prefect's config
    and wrote ``~/.prefect/backend.toml``; this one is turned into a
    `PrefectServerConfig` (see `server_config`) held by the one backend it is
    given to. The mapping (also in the README's migration table):

    - ``server``: a `PrefectServerConfig`, which takes lume-services' ``host``,
      ``host_port``, ``tag`` and ``host_ip`` (-> ``api_url``) as well as its own
      fields (``api_key``, polling...).
    - ``ui``: ``host:host_port`` -> ``ui_url`` (unless ``server`` sets one).
    - ``default_image`` (alias ``image``) -> ``default_image`` (unless ``server``
      sets one). None by default: the original's default image was never used
      (its ``register_flow`` failed on the missing attribute).
    - ``backend``: ``"server"`` only.
    - ``agent``, ``telemetry``, ``home_dir``, ``debug``, ``isolated``: accepted
      and not used; nothing is read from or written to ``home_dir``.
    """

    server: PrefectServerConfig = PrefectServerConfig()
    ui: PrefectUIConfig = PrefectUIConfig()
    telemetry: PrefectTelemetryConfig = PrefectTelemetryConfig()
    agent: PrefectAgentConfig = PrefectAgentConfig()
    home_dir: str = "~/.prefect"
    debug: bool = False
    backend: str = "server"
    default_image: Optional[str] = Field(None, alias="image")
    isolated: bool = False

    class Config:
        allow_population_by_field_name = True

    @validator("backend")
    def _check_backend(cls, value: str) -> str:
        if value != "server":
            raise ValueError(
                f"backend {value!r} is not supported: lume-scheduling talks to a Prefect 1 "
                "Server ('server'); give its address in server (host/host_port or api_url)"
            )
        return value

    _check_default_image = validator("default_image", allow_reuse=True)(_checked_default_image)

    def server_config(self) -> PrefectServerConfig:
        """The `PrefectServerConfig` a server backend uses for this config."""
        fields = self.server.dict(exclude_unset=True)
        fields.setdefault("api_url", self.server.api_url)
        if self.server.ui_url is None:
            fields["ui_url"] = self.ui.url()
        if self.server.default_image is None and self.default_image is not None:
            fields["default_image"] = self.default_image
        return PrefectServerConfig(**fields)

    def apply(self) -> PrefectServerConfig:
        """Kept so that lume-services' ``configure()`` code runs; changes nothing.

        The original updated prefect's global config and wrote
        ``~/.prefect/backend.toml``. Here each backend holds its own client, so
        there is nothing to apply: pass the config to the backend.

        Returns:
            `server_config()`.
        """
        warnings.warn(
            "PrefectConfig.apply() changes nothing: lume-scheduling keeps no global prefect "
            "config and writes nothing under ~/.prefect; pass the config to the backend "
            "(DockerBackend(config=...))",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.server_config()

    @classmethod
    def from_lume_services(cls, config: Any) -> "PrefectConfig":
        """Read lume-services' own ``PrefectConfig`` object (or a mapping of its fields).

        Only the fields that were set are read, so lume-services' defaults (its
        default image) do not override ours.

        Raises:
            TypeError: ``config`` is neither a pydantic model nor a mapping.
            pydantic.ValidationError: A field is unknown or invalid.
        """
        if isinstance(config, BaseModel):
            return cls.parse_obj(config.dict(exclude_unset=True))
        if isinstance(config, Mapping):
            return cls.parse_obj(dict(config))
        raise TypeError(
            f"config must be lume-services' PrefectConfig or a mapping of its fields, "
            f"not {type(config).__name__}"
        )


def server_config_from(config: Any) -> PrefectServerConfig:
    """The one-call converter: any accepted form of server settings as a
    `PrefectServerConfig`.

    Args:
        config: A `PrefectServerConfig` (returned as it is), a `PrefectConfig`,
            lume-services' own ``PrefectConfig`` object, or None (the default
            `PrefectServerConfig`, a server on localhost:4200).

    Raises:
        TypeError: Anything else.
        pydantic.ValidationError: lume-services' config has an unknown or invalid
            field.
    """
    if config is None:
        return PrefectServerConfig()
    if isinstance(config, PrefectServerConfig):
        return config
    if isinstance(config, PrefectConfig):
        return config.server_config()
    if isinstance(config, BaseModel) and {"server", "ui"} <= set(type(config).__fields__):
        return PrefectConfig.from_lume_services(config).server_config()
    raise TypeError(
        "config must be a PrefectServerConfig, a PrefectConfig or lume-services' "
        f"PrefectConfig, not {type(config).__name__}"
    )
