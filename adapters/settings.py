"""Settings of the composition root: which backend, and how to reach or size it.

Settings come from four places, later ones winning key by key:

1. the defaults below (the isolated local backend);
2. a settings file: TOML (``.toml``, read with `tomllib`), YAML (``.yaml``/``.yml``,
   read with PyYAML's safe loader only, so no tag can run code) or JSON (``.json``),
   within the limits of `lume_scheduling.domain.documents` (size, nesting depth,
   YAML alias expansion);
3. environment variables: ``LUME_SCHEDULING_BACKEND`` for the backend kind, and
   ``LUME_SCHEDULING_<SECTION>__<KEY>`` (two underscores) for one key of a
   section, e.g. ``LUME_SCHEDULING_LOCAL__MAX_WORKERS=4`` or
   ``LUME_SCHEDULING_SERVER__API_KEY=...``. Other ``LUME_SCHEDULING_*`` names
   (without ``__``) are not settings and are left alone;
4. explicit overrides (a dict, e.g. the command line's ``--backend``).

Every section forbids unknown keys, and values are not coerced: an integer key
takes an integer (not ``2.5``, ``true`` or ``"2"``), a boolean key ``true`` or
``false`` (not ``1`` or ``"yes"``), a text key text. Environment variables hold
text, so theirs are read by the key's type first (``4``; ``true``/``false``,
``yes``/``no``, ``on``/``off``, ``1``/``0``). A bad key or value raises
`SettingsError`, which names the key, where it came from (file or environment
variable) and what is wrong, one problem per line. The API key is a
`pydantic.SecretStr`: no repr, str, log line or error message shows it.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

from pydantic import BaseModel, Extra, SecretStr, StrictBool, StrictInt, StrictStr, ValidationError, conint, validator

from lume_scheduling.domain.documents import (
    DocumentError,
    check_depth,
    check_size,
    load_yaml,
    read_document,
    too_deep,
)
from lume_scheduling.domain.image import image_reference_problem

ENV_PREFIX = "LUME_SCHEDULING_"
ENV_BACKEND = ENV_PREFIX + "BACKEND"
ENV_SECTION_SEPARATOR = "__"

BACKEND_KINDS: Tuple[str, ...] = ("local", "docker", "kubernetes", "fake", "dask")
BackendKind = Literal["local", "docker", "kubernetes", "fake", "dask"]

_TOML_SUFFIXES = (".toml",)
_YAML_SUFFIXES = (".yaml", ".yml")
_JSON_SUFFIXES = (".json",)


class SettingsError(ValueError):
    """Settings that cannot be read or do not validate.

    Attributes:
        source: What was being read ("settings file 'x.toml'", "settings", ...).
        problems: ``(location, message)`` pairs, one per problem; a location is a
            dotted key such as ``local.max_workers``, with the environment
            variable it came from when it came from one.
    """

    def __init__(self, source: str, problems: Sequence[Tuple[str, str]]) -> None:
        self.source = source
        self.problems: List[Tuple[str, str]] = list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> List[str]:
        """One readable line per problem: ``<source>: <location>: <message>``."""
        return [
            f"{self.source}: {location}: {message}" if location else f"{self.source}: {message}"
            for location, message in self.problems
        ]


class _Section(BaseModel):
    class Config:
        extra = Extra.forbid
        validate_assignment = True


class LocalSettings(_Section):
    """The local backend (`LocalBackend`).

    Attributes:
        max_workers: Worker processes running flows at once; None lets the
            backend choose.
        isolated: Run each flow in a worker process (a crash or hang cannot take
            the caller down); False runs flows in this process.
        max_runs_per_worker: Runs a worker process serves before a fresh one
            replaces it; None keeps workers for the backend's life.
        fork_first_worker: Fork the first worker from the calling process
            itself when it has no other thread (the command line's ``run``
            does: its one run then skips the fork server's import of prefect).
    """

    max_workers: Optional[conint(strict=True, ge=1)] = None  # type: ignore[valid-type]
    isolated: StrictBool = True
    max_runs_per_worker: Optional[conint(strict=True, ge=1)] = None  # type: ignore[valid-type]
    fork_first_worker: StrictBool = False


_SECONDS_KEYS = (
    "request_timeout",
    "request_backoff",
    "poll_interval",
    "poll_backoff",
    "poll_max_interval",
    "cancel_timeout",
    "log_tail_quiet",
    "log_tail_max",
    "agent_check_after",
    "agent_stale_after",
)


class ServerSettings(_Section):
    """The Prefect 1 Server the docker and kubernetes backends talk to.

    The keys are those of `lume_scheduling.adapters.server.PrefectServerConfig`;
    a key left out takes that model's default. When the server backends are
    installed, the section is also checked against that model, so a value it
    rejects is reported here, with its key.

    Attributes:
        api_url: The server's GraphQL endpoint (http or https).
        api_key: API key sent to the server, if it needs one; never shown.
        tenant_id: Tenant to work in (a UUID); None means the server's first tenant.
        default_image: Image flows are registered with when none is given.
        ui_url: The server's UI, for the flow addresses registration prints.
        request_timeout, request_retries, request_backoff: HTTP requests: seconds
            one may take, extra attempts, seconds before the first retry.
        poll_interval, poll_backoff, poll_max_interval: How often a run's state
            is asked for while waiting.
        cancel_timeout: Seconds a cancel waits for the run to be Cancelled.
        log_tail_quiet, log_tail_max: After a run's final state, its logs are
            read on until quiet for ``log_tail_quiet`` seconds, for at most
            ``log_tail_max`` seconds (prefect's last log batch lands after the
            final state).
        agent_check_after: Seconds a run may stay scheduled before the backend
            checks that an agent with its labels polls; null never checks.
        agent_stale_after: Seconds after its last poll that an agent no longer
            counts for that check.
        resurrection_attempt_limit: The server's Lazarus attempt limit, for the
            message that a run was rescheduled ("attempt 1 of 3").
        task_run_page_size: Task runs fetched per query.
    """

    api_url: StrictStr = "http://localhost:4200/graphql"
    api_key: Optional[SecretStr] = None
    tenant_id: Optional[StrictStr] = None
    default_image: Optional[StrictStr] = None
    ui_url: Optional[StrictStr] = None
    request_timeout: Optional[float] = None
    request_retries: Optional[StrictInt] = None
    request_backoff: Optional[float] = None
    poll_interval: Optional[float] = None
    poll_backoff: Optional[float] = None
    poll_max_interval: Optional[float] = None
    cancel_timeout: Optional[float] = None
    log_tail_quiet: Optional[float] = None
    log_tail_max: Optional[float] = None
    agent_check_after: Optional[float] = None
    agent_stale_after: Optional[float] = None
    resurrection_attempt_limit: Optional[StrictInt] = None
    task_run_page_size: Optional[StrictInt] = None

    @validator("api_key", pre=True)
    def _check_api_key_is_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (str, SecretStr)):
            raise TypeError("str type expected")  # never the value: it is a secret
        return value

    @validator(*_SECONDS_KEYS, pre=True)
    def _check_number(cls, value: Any) -> Any:
        # An int is a number of seconds too; text and booleans are not.
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError("value is not a valid float")
        return value

    @validator("api_url")
    def _check_api_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"api_url must be an http(s) URL such as http://localhost:4200/graphql, "
                f"not {value!r}"
            )
        return value

    @validator("default_image")
    def _check_default_image(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            problem = image_reference_problem(value)
            if problem:
                raise ValueError(f"default_image {value!r} is not a valid image reference: {problem}")
        return value

    def backend_options(self) -> Dict[str, Any]:
        """The keys that were given, for `PrefectServerConfig` (its defaults fill the rest)."""
        return self.dict(exclude_unset=True)

    def __repr_args__(self) -> Any:
        # Only what was given, with the key masked.
        return [
            (name, "**********" if name == "api_key" and value is not None else value)
            for name, value in super().__repr_args__()
            if name in self.__fields_set__ or name == "api_url"
        ]


def server_config_problems(server: ServerSettings) -> List[Tuple[str, str]]:
    """What `PrefectServerConfig` rejects in the server section, as ``(server.key, message)``.

    Empty when everything is accepted, or when the server backends are not installed.
    """
    if not server.backend_options():
        # Nothing given: the model's defaults hold, and the server backends
        # (which import prefect) need not be imported to say so.
        return []
    try:
        from lume_scheduling.adapters.server import PrefectServerConfig
    except ImportError:
        return []
    try:
        PrefectServerConfig.parse_obj(server.backend_options())
    except ValidationError as err:
        return [
            (f"server.{location}" if location else "server", message)
            for location, message in validation_problems(err)
        ]
    return []


class DaskSettings(_Section):
    """The Dask backend (`DaskBackend`).

    Attributes:
        address: A Dask scheduler to join (``tcp://host:8786``); None starts an
            embedded LocalCluster for the backend's life.
        n_workers: Worker processes of the embedded cluster; None: one per core.
        threads_per_worker: Runs at once per worker of the embedded cluster;
            None: 1.
        publish_runs: Publish runs on the scheduler so other processes can
            address them by id; None: only when ``address`` is given.
    """

    address: Optional[StrictStr] = None
    n_workers: Optional[conint(strict=True, ge=1)] = None  # type: ignore[valid-type]
    threads_per_worker: Optional[conint(strict=True, ge=1)] = None  # type: ignore[valid-type]
    publish_runs: Optional[StrictBool] = None

    @validator("address")
    def _check_address(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (not value.strip() or value != value.strip()):
            raise ValueError(f"address must be a scheduler address such as tcp://host:8786, not {value!r}")
        return value

    @validator("n_workers", "threads_per_worker")
    def _check_embedded_only(cls, value: Optional[int], values: Dict[str, Any], field: Any) -> Optional[int]:
        if value is not None and values.get("address") is not None:
            raise ValueError(f"{field.name} sizes the embedded cluster only; leave it out with an address")
        return value


class FakeSettings(_Section):
    """The in-memory fake (`InMemoryBackend`), for tests and demos.

    Attributes:
        server: Behave like a server backend (projects, registration, runs by
            flow id) rather than like the local backend.
    """

    server: StrictBool = True


class Settings(_Section):
    """All settings of the composition root.

    Attributes:
        backend: Which backend the container builds: ``local``, ``docker``,
            ``kubernetes``, ``fake`` or ``dask``.
        local: Settings of the local backend.
        server: Settings of the docker and kubernetes backends (one Prefect Server).
        fake: Settings of the fake.
        dask: Settings of the Dask backend.
    """

    backend: BackendKind = "local"
    local: LocalSettings = LocalSettings()
    server: ServerSettings = ServerSettings()
    fake: FakeSettings = FakeSettings()
    dask: DaskSettings = DaskSettings()

    @classmethod
    def from_mapping(
        cls, data: Union["Settings", Mapping[str, Any], None], source: str = "settings"
    ) -> "Settings":
        """Validate plain data (a parsed file, a container's config) into settings.

        Args:
            data: The settings as nested mappings (or `Settings`, returned as
                they are); None means all defaults.
            source: What the data is, for error messages.

        Raises:
            SettingsError: A key is unknown or a value is invalid.
        """
        if data is None:
            data = {}
        if isinstance(data, Settings):
            return data
        if not isinstance(data, Mapping):
            raise SettingsError(source, [("", f"must be a mapping of settings, not {type(data).__name__}")])
        try:
            settings = cls.parse_obj(dict(data))
        except ValidationError as err:
            raise SettingsError(source, validation_problems(err)) from err
        settings.check_server(source)
        return settings

    def check_server(self, source: str, origins: Optional[Mapping[Tuple[str, ...], str]] = None) -> None:
        """Check the server section against the server backends' own model.

        Raises:
            SettingsError: A server key has a value the server backends reject.
        """
        problems = server_config_problems(self.server)
        if problems:
            named = []
            for location, message in problems:
                origin = (origins or {}).get(tuple(location.split(".")))
                named.append((f"{location} ({origin})" if origin else location, message))
            raise SettingsError(source, named)

    def public_dict(self) -> Dict[str, Any]:
        """The settings as plain data with the API key masked (safe to print)."""
        data = self.dict()
        if data["server"]["api_key"] is not None:
            data["server"]["api_key"] = "**********"
        return data


def validation_problems(err: ValidationError, origins: Optional[Mapping[Tuple[str, ...], str]] = None) -> List[Tuple[str, str]]:
    """(location, message) per error, naming the environment variable a value came from."""
    problems = []
    for error in err.errors():
        loc = tuple(str(part) for part in error["loc"] if part != "__root__")
        location = ".".join(loc)
        origin = _origin(loc, origins or {})
        if origin:
            location = f"{location} ({origin})"
        message = error["msg"]
        if error["type"] == "value_error.extra":
            message = "unknown key"
        elif error["type"] == "type_error.none.not_allowed":
            message = "must have a value"
        problems.append((location, message))
    return problems


def _origin(loc: Tuple[str, ...], origins: Mapping[Tuple[str, ...], str]) -> Optional[str]:
    """The variable(s) a value at ``loc`` came from: the key's own, else those
    of the keys under it (a section made of variables)."""
    if loc in origins:
        return origins[loc]
    under = sorted(name for path, name in origins.items() if loc and path[: len(loc)] == loc)
    return ", ".join(under) or None


# ------------------------------------------------------------------ sources


def read_settings_file(path: Union[str, os.PathLike[str]]) -> Dict[str, Any]:
    """Read a settings file into plain data, choosing the parser by suffix.

    YAML is read with PyYAML's safe loader: tags such as ``!!python/object``
    are rejected, never run. A file larger than 1,000,000 characters, nested
    more than 100 levels deep, or (YAML) with more than 100,000 nodes once its
    aliases are expanded is refused.

    Args:
        path: A ``.toml``, ``.yaml``/``.yml`` or ``.json`` file.

    Returns:
        The file's top-level mapping.

    Raises:
        SettingsError: The file is missing, unreadable, of an unknown type, not
            valid TOML/YAML/JSON, beyond the limits, or does not hold a mapping.
    """
    file = Path(path)
    source = f"settings file {str(file)!r}"
    suffix = file.suffix.lower()
    if suffix not in _TOML_SUFFIXES + _YAML_SUFFIXES + _JSON_SUFFIXES:
        raise SettingsError(
            source, [("", f"unknown file type {suffix or '(none)'!r}: use .toml, .yaml, .yml or .json")]
        )
    text = read_bounded(file, source)
    data = parse_document(text, suffix, source)
    if not isinstance(data, dict):
        raise SettingsError(source, [("", f"must hold a mapping of settings, not {type(data).__name__}")])
    return data


def read_bounded(path: Union[str, os.PathLike[str]], source: str) -> str:
    """The text of a settings or run config file (UTF-8, at most
    `MAX_DOCUMENT_CHARS` characters).

    Raises:
        SettingsError: It cannot be read, or it is larger than the limit.
    """
    try:
        return read_document(os.fspath(path))
    except DocumentError as err:
        raise SettingsError(source, [("", str(err))]) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SettingsError(source, [("", f"cannot be read: {reason}")]) from err


def parse_document(text: str, suffix: str, source: str) -> Any:
    """Parse TOML, YAML (safe loader) or JSON text, by file suffix, within the
    limits of `lume_scheduling.domain.documents` (size, nesting, YAML aliases).

    Parse errors say where (line, column) and what, never echo the text: a
    settings file may hold an API key.

    Raises:
        SettingsError: The text does not parse, or is beyond the limits.
    """
    try:
        data = _parse(text, suffix)
        check_depth(data)
        return data
    except DocumentError as err:
        if err.syntax:
            kind = "TOML" if suffix in _TOML_SUFFIXES else "JSON" if suffix in _JSON_SUFFIXES else "YAML"
            problem = f"is not valid {kind}: {err}"
        else:
            problem = str(err)
    # Raised outside the handler, not chained: a parser's own message may quote
    # the offending line, which may hold a key.
    raise SettingsError(source, [("", problem)])


def _parse(text: str, suffix: str) -> Any:
    check_size(text)
    if suffix in _YAML_SUFFIXES or suffix not in _TOML_SUFFIXES + _JSON_SUFFIXES:
        return load_yaml(text)
    try:
        if suffix in _TOML_SUFFIXES:
            try:
                return tomllib.loads(text)
            except tomllib.TOMLDecodeError as err:
                raise DocumentError(str(err), syntax=True) from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise DocumentError(err.msg, err.lineno, err.colno, syntax=True) from None
    except RecursionError:
        # Both parsers recurse once per nesting level.
        raise too_deep() from None


_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def environ_value(section: str, key: str, text: str) -> Any:
    """An environment variable's text read by the type of the key it sets: an
    integer, a number, ``true``/``false`` (also ``yes``/``no``, ``on``/``off``,
    ``1``/``0``) or text. Text that does not read as the type is kept as it is,
    so that validation names the key and the variable."""
    model = Settings.__fields__.get(section)
    field = None
    if model is not None and isinstance(model.type_, type) and issubclass(model.type_, _Section):
        field = model.type_.__fields__.get(key)
    if field is None:
        return text
    kind = field.type_
    word = text.strip().lower()
    if kind in (bool, StrictBool):  # StrictBool is an int subclass: test it first
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        return text
    if isinstance(kind, type) and issubclass(kind, int):
        return int(word) if _INTEGER_TEXT.fullmatch(word) else text
    if kind is float:
        try:
            return float(word)
        except ValueError:
            return text
    return text


def settings_from_environ(
    environ: Optional[Mapping[str, str]] = None,
) -> Tuple[Dict[str, Any], Dict[Tuple[str, ...], str]]:
    """The settings named by environment variables.

    ``LUME_SCHEDULING_BACKEND`` sets ``backend``; ``LUME_SCHEDULING_A__B`` sets
    key ``b`` of section ``a`` (names are case-insensitive). Values are read by
    the type of their key (`environ_value`); validation then checks them.

    Args:
        environ: The environment; None means `os.environ`.

    Returns:
        ``(data, origins)``: nested settings data, and for each dotted key the
        variable it came from.

    Raises:
        SettingsError: A variable with ``__`` does not name one key of one
            section (``LUME_SCHEDULING_LOCAL__MAX_WORKERS__X``,
            ``LUME_SCHEDULING_BACKEND__X``, ``LUME_SCHEDULING_LOCAL__``); each
            such variable is named.
    """
    environ = os.environ if environ is None else environ
    data: Dict[str, Any] = {}
    origins: Dict[Tuple[str, ...], str] = {}
    problems: List[Tuple[str, str]] = []
    for name, value in sorted(environ.items()):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if name.upper() == ENV_BACKEND:
            data["backend"] = value
            origins[("backend",)] = name
        elif ENV_SECTION_SEPARATOR in rest:
            path = tuple(rest.split(ENV_SECTION_SEPARATOR))
            if len(path) != 2 or not all(path) or path[0] == "backend":
                problems.append((
                    f"{'.'.join(path)} ({name})",
                    f"not a setting: a key of a section is {ENV_PREFIX}<SECTION>__<KEY>, "
                    f"with one '{ENV_SECTION_SEPARATOR}' (the backend is {ENV_BACKEND})",
                ))
                continue
            section, key = path
            data.setdefault(section, {})[key] = environ_value(section, key, value)
            origins[path] = name
    if problems:
        raise SettingsError("settings from the environment", problems)
    return data, origins


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """Merge nested mappings key by key; ``override`` wins."""
    merged: Dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    file: Union[str, os.PathLike[str], None] = None,
    *,
    environ: Optional[Mapping[str, str]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> Settings:
    """Load settings from defaults, a file, the environment and overrides.

    Args:
        file: A settings file (TOML, YAML or JSON), or None.
        environ: The environment to read; None means `os.environ`, ``{}`` reads none.
        overrides: Nested settings that win over everything else.

    Returns:
        The validated settings.

    Raises:
        SettingsError: A file problem, an unknown key or an invalid value.
    """
    data: Dict[str, Any] = {}
    origins: Dict[Tuple[str, ...], str] = {}
    source = "settings"
    if file is not None:
        data = read_settings_file(file)
        source = f"settings file {os.fspath(file)!r}"
    env_data, env_origins = settings_from_environ(environ)
    if env_data:
        data = merge(data, env_data)
        origins.update(env_origins)
        source = f"{source} and environment" if file is not None else "settings from the environment"
    if overrides:
        data = merge(data, overrides)
        for key in overrides:
            if not isinstance(overrides[key], Mapping):
                origins.pop((key,), None)
    try:
        settings = Settings.parse_obj(data)
    except ValidationError as err:
        raise SettingsError(source, validation_problems(err, origins)) from err
    settings.check_server(source, origins)
    return settings


__all__ = [
    "BACKEND_KINDS",
    "ENV_BACKEND",
    "ENV_PREFIX",
    "FakeSettings",
    "LocalSettings",
    "DaskSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "load_settings",
    "validation_problems",
    "environ_value",
    "merge",
    "parse_document",
    "read_bounded",
    "read_settings_file",
    "server_config_problems",
    "settings_from_environ",
]
