"""The ``lume-scheduling`` command line: run, submit and inspect flow runs on any backend.

Results go to stdout as JSON, and nothing else does: while a command runs, what
the flow prints (in this process or in worker processes) and every log line go
to stderr, with progress (state changes) and errors, one line each (the
traceback only with ``--debug``). Exit codes:

===  =====================================================================
0    success
1    any other error (a bug: rerun with --debug for the traceback)
2    usage or configuration error: bad option or parameter, invalid settings
     or run config file, a flow that cannot be loaded, an unknown task, an
     operation the backend does not have
3    the flow run failed, crashed or was cancelled, or the task asked for did
     not complete or returned nothing
4    time-out: the flow run did not finish within --timeout (it is cancelled)
5    the backend is unavailable (server unreachable, backend not installed)
6    not found: unknown flow id or flow run id
130  interrupted (Ctrl-C); the backend is closed, which stops local runs
143  terminated (SIGTERM); the backend is closed, as for Ctrl-C
===  =====================================================================
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

import click
from pydantic import ValidationError

from lume_scheduling.application import SchedulingService
from lume_scheduling.domain import (
    RUN_CONFIG_KINDS,
    BackendUnavailableError,
    EmptyResultError,
    FlowFailedError,
    FlowNotFoundError,
    FlowParameterError,
    FlowRunNotFoundError,
    FlowRunState,
    FlowRunTimeoutError,
    LocalBackendError,
    RunConfig,
    TaskNotCompletedError,
    TaskNotInFlowError,
    as_timedelta,
    parse_run_config,
)

from lume_scheduling.domain.secrets import mask_text, secret_values

from .settings import (
    BACKEND_KINDS,
    Settings,
    SettingsError,
    load_settings,
    parse_document,
    read_bounded,
    validation_problems,
)

PROG = "lume-scheduling"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FLOW_FAILED = 3
EXIT_TIMEOUT = 4
EXIT_UNAVAILABLE = 5
EXIT_NOT_FOUND = 6
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

DEFAULT_FLOW_ATTRIBUTE = "flow"
# Backends log under this name (e.g. a server run's own log lines).
LOGGER_NAME = "lume_scheduling"
SERVER_KINDS = ("docker", "kubernetes")
MASK = "**********"
# How often `run` looks at the state while it waits, to report changes.
POLL_SECONDS = 0.25


class CliError(click.ClickException):
    """An error the command line reports as one line, with its exit code."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it per class


# ----------------------------------------------------------------- state


@dataclass
class CliState:
    """What the global options say, and the container built from them (per invocation)."""

    config_file: Optional[str] = None
    backend: Optional[str] = None
    debug: bool = False
    quiet: bool = False
    # Where results go (the real stdout, kept aside while the command runs).
    out: Optional[TextIO] = None
    # Set once interrupted, or once the backend is being closed: further
    # Ctrl-C/SIGTERM are ignored (the way out is under way).
    interrupted: bool = False
    closing: bool = False
    # `run` makes one run and exits: its first local worker is a fork of this
    # process, which has imported prefect already (unless the settings say no).
    fork_first_worker: bool = False
    _settings: Optional[Settings] = None
    _container: Any = None
    # Env values of the run config given, masked in every line printed.
    secrets: Tuple[str, ...] = ()
    _log_handler: Optional[logging.Handler] = None
    _prefect_adopted: bool = False
    _undo: List[Callable[[], None]] = field(default_factory=list)

    def settings(self) -> Settings:
        """The settings: --config file, then the environment, then --backend."""
        if self._settings is None:
            overrides = {"backend": self.backend} if self.backend else None
            self._settings = load_settings(self.config_file, overrides=overrides)
        return self._settings

    def service(self) -> SchedulingService:
        """The service over the configured backend; the backend is closed when the command ends."""
        if self._container is None:
            from .container import create_container

            container = create_container(self._backend_settings())
            self._container = container

            def shutdown() -> None:
                self.closing = True
                container.shutdown_resources()

            click.get_current_context().find_root().call_on_close(shutdown)
        service: SchedulingService = self._container.service()
        _adopt_prefect_logs(self)
        return service

    def emit(self, text: str) -> None:
        """A result line on stdout (the only thing that goes there)."""
        click.echo(text, file=self.out)

    def _backend_settings(self) -> Settings:
        settings = self.settings()
        local = settings.local
        if (
            self.fork_first_worker
            and settings.backend == "local"
            and local.isolated
            and "fork_first_worker" not in local.__fields_set__
        ):
            settings = settings.copy(update={"local": local.copy(update={"fork_first_worker": True})})
        return settings

    def progress(self, message: str) -> None:
        """A progress line on stderr, unless --quiet."""
        if not self.quiet:
            click.echo(f"{PROG}: {message}", err=True)


pass_state = click.make_pass_decorator(CliState, ensure=True)


def _use_backend(state: CliState, backend: Optional[str]) -> None:
    """Apply a command's own --backend (it wins over the global one)."""
    if backend:
        state.backend = backend
        state._settings = None


def _require_server_kind(state: CliState, command: str) -> None:
    """Commands that address a run by id need a server: local runs live in their process."""
    settings = state.settings()
    kind = settings.backend
    if kind == "dask":
        if settings.dask.address is None:
            raise CliError(
                f"{command} needs a Dask scheduler address (dask.address, or "
                "LUME_SCHEDULING_DASK__ADDRESS=tcp://host:8786): runs of the embedded Dask "
                f"cluster live in the process that started them; use '{PROG} run' instead",
                EXIT_USAGE,
            )
        return
    if kind not in SERVER_KINDS:
        raise CliError(
            f"{command} needs a server backend (--backend docker or kubernetes): runs of the "
            f"{kind} backend live in the process that started them; use '{PROG} run' instead",
            EXIT_USAGE,
        )


# ----------------------------------------------------------------- flows


def load_flow(spec: str) -> Any:
    """Load a Prefect flow from ``path/to/file.py[:attribute]`` or ``package.module[:attribute]``.

    The attribute defaults to ``flow`` and may be dotted (``module:flows.main``).
    A file is loaded as a fresh module whose code is pickled by value, so worker
    processes can run its flow without importing it.

    Raises:
        CliError: The file or module cannot be loaded, the attribute is missing,
            or it is not a Prefect flow (exit code 2).
    """
    target, attribute = _split_flow_spec(spec)
    try:
        if _is_file_target(target):
            module = _load_file_module(Path(target))
        else:
            module = importlib.import_module(target)
    except CliError:
        raise
    except SystemExit as err:  # sys.exit() at import: nothing would run, yet exit 0
        raise CliError(
            f"cannot load flow {spec!r}: {target} called sys.exit({err.code!r}) while it was imported "
            "(guard script code with `if __name__ == \"__main__\":`)"
        ) from err
    except Exception as err:  # the user's code may raise anything while it loads
        raise CliError(f"cannot load flow {spec!r}: {type(err).__name__}: {err}") from err
    candidate: Any = module
    for part in attribute.split("."):
        try:
            candidate = getattr(candidate, part)
        except AttributeError:
            raise CliError(f"cannot load flow {spec!r}: {target} has no attribute {attribute!r}") from None
    from .prefect_flows import is_prefect_flow

    if not is_prefect_flow(candidate):
        raise CliError(
            f"cannot load flow {spec!r}: {attribute} is a {type(candidate).__name__}, not a Prefect flow"
        )
    return candidate


def _split_flow_spec(spec: str) -> Tuple[str, str]:
    target, colon, attribute = spec.rpartition(":")
    # "C:\\flows\\x.py" or "dir/x.py" without an attribute: the colon is not ours.
    if not colon or "/" in attribute or "\\" in attribute or attribute.endswith(".py"):
        target, attribute = spec, DEFAULT_FLOW_ATTRIBUTE
    if not target or not attribute:
        raise CliError(f"FLOW {spec!r} must be path/to/file.py[:attribute] or package.module[:attribute]")
    return target, attribute


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _load_file_module(path: Path) -> Any:
    if not path.is_file():
        raise CliError(f"cannot load flow: {str(path)!r} is not a file")
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    name = f"_lume_scheduling_flow_{resolved.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot load flow: {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    # In sys.modules while it runs (dataclasses and pickling look it up there).
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    import cloudpickle

    # Worker processes cannot import this module by name: send its code instead.
    cloudpickle.register_pickle_by_value(module)
    return module


# ------------------------------------------------------------- parameters


def parse_parameters(pairs: Sequence[str]) -> Dict[str, Any]:
    """``name=value`` pairs as flow parameters; a value is JSON when it parses, else text.

    Raises:
        CliError: A pair has no ``=``, an empty name, or repeats a name.
    """
    parameters: Dict[str, Any] = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        name = name.strip()
        if not equals:
            raise CliError(f"parameter {pair!r} must be written name=value (option -p/--param)")
        if not name:
            raise CliError(f"parameter {pair!r} has no name (option -p/--param)")
        if name in parameters:
            raise CliError(f"parameter {name!r} is given twice (option -p/--param)")
        try:
            parameters[name] = json.loads(text)
        except ValueError:
            parameters[name] = text
    return parameters


# ----------------------------------------------------------------- output


def jsonable(value: Any) -> Any:
    """``value`` as data JSON can hold: containers converted, anything else as its repr.

    Lists, tuples and sets become lists (sets sorted by repr), mappings keep
    string keys (other keys become their repr, or json's own form for numbers,
    booleans and None), non-finite floats and other objects become ``repr(value)``.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return [jsonable(item) for item in sorted(value, key=repr)]
    if isinstance(value, dict):
        return {_json_key(key): jsonable(item) for key, item in value.items()}
    return repr(value)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return repr(key)


def emit_json(state: "CliState", value: Any) -> None:
    """Write ``value`` to stdout as one JSON document."""
    state.emit(json.dumps(jsonable(value), allow_nan=False))


# ------------------------------------------------------------- run configs


def read_run_config(path: str) -> RunConfig:
    """Read and validate a run config file (YAML or JSON) holding ``kind`` and the fields.

    Raises:
        SettingsError: Unreadable, beyond the limits of a settings file (size,
            nesting, YAML aliases), not a mapping, no or unknown ``kind``, or an
            invalid field; one problem per field.
    """
    source = f"run config {path!r}"
    text = read_bounded(path, source)
    suffix = ".json" if path.lower().endswith(".json") else ".yaml"
    data = parse_document(text, suffix, source)
    if not isinstance(data, dict):
        raise SettingsError(source, [("", f"must hold a mapping of run config fields, not {type(data).__name__}")])
    fields = dict(data)
    kind = fields.pop("kind", None)
    if kind is None:
        raise SettingsError(source, [("kind", f"field required: one of {', '.join(RUN_CONFIG_KINDS)}")])
    if kind not in RUN_CONFIG_KINDS:
        raise SettingsError(source, [("kind", f"{kind!r} is unknown: use one of {', '.join(RUN_CONFIG_KINDS)}")])
    try:
        return parse_run_config(kind, fields)
    except ValidationError as err:
        raise SettingsError(source, validation_problems(err)) from err


def public_run_config(config: RunConfig) -> Dict[str, Any]:
    """A run config as data that is safe to print: its kind first, env values masked."""
    data = {"kind": config.kind, **config.dict()}
    if data.get("env"):
        data["env"] = {name: MASK for name in data["env"]}
    return data


# ----------------------------------------------------------------- errors


def classify(err: BaseException) -> Tuple[int, List[str]]:
    """The exit code and the stderr lines for an error."""
    if isinstance(err, SettingsError):
        return EXIT_USAGE, err.lines()
    if isinstance(err, click.ClickException):
        return err.exit_code, [err.format_message()]
    if isinstance(err, ValidationError):
        return EXIT_USAGE, [
            f"invalid run config: {location}: {message}" for location, message in validation_problems(err)
        ]
    if isinstance(err, FlowRunTimeoutError):
        return EXIT_TIMEOUT, [str(err)]
    if isinstance(err, (FlowFailedError, TaskNotCompletedError, EmptyResultError)):
        return EXIT_FLOW_FAILED, [str(err)]
    if isinstance(err, BackendUnavailableError):
        return EXIT_UNAVAILABLE, [str(err)]
    if isinstance(err, (FlowNotFoundError, FlowRunNotFoundError)):
        return EXIT_NOT_FOUND, [str(err)]
    if isinstance(err, (TaskNotInFlowError, LocalBackendError, FlowParameterError)):
        return EXIT_USAGE, [str(err)]
    if isinstance(err, (TypeError, ValueError)):
        return EXIT_USAGE, [f"invalid argument: {err}"]
    return EXIT_ERROR, [f"unexpected {type(err).__name__}: {err} (rerun with --debug for the traceback)"]


# ----------------------------------------------------------------- commands

_backend_option = click.option(
    "--backend",
    type=click.Choice(BACKEND_KINDS),
    default=None,
    help="Backend to use (overrides --config and LUME_SCHEDULING_BACKEND).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="LUME_SCHEDULING_CONFIG",
    default=None,
    help="Settings file (.toml, .yaml/.yml or .json); default $LUME_SCHEDULING_CONFIG.",
)
@_backend_option
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@pass_state
def cli(state: CliState, config_file: Optional[str], backend: Optional[str], debug: bool, quiet: bool) -> None:
    """Run Prefect 1 flows of LUME on a local, Docker or Kubernetes backend.

    Settings come from --config, then LUME_SCHEDULING_* environment variables,
    then --backend. Results are printed as JSON on stdout.
    """
    state.config_file = config_file
    state.backend = backend
    state.debug = debug
    state.quiet = quiet


def _check_target_arguments(flow_spec: Optional[str], flow_id: Optional[str], project: Optional[str]) -> None:
    """FLOW or --flow-id, checked before any backend starts."""
    if flow_id is not None and (flow_spec is not None or project is not None):
        raise CliError("give either FLOW (with --project on a server backend) or --flow-id, not both")
    if flow_id is None and flow_spec is None:
        raise CliError("missing FLOW (path/to/file.py[:attribute] or package.module[:attribute]) or --flow-id")


def _run_target(
    state: CliState,
    service: SchedulingService,
    flow: Any,
    flow_id: Optional[str],
    project: Optional[str],
) -> Dict[str, Any]:
    """``flow=`` or ``flow_id=`` for the backend, registering FLOW into --project if asked."""
    kind = state.settings().backend
    if flow_id is not None:
        if not service.capabilities.server:
            raise CliError(f"--flow-id needs a server backend; the {kind} backend runs FLOW itself")
        return {"flow_id": flow_id}
    if not service.capabilities.server:
        if project is not None:
            raise CliError(f"--project needs a server backend; the {kind} backend has no projects")
        return {"flow": flow}
    if project is None:
        raise CliError(
            "a server backend runs registered flows: give --flow-id ID, or FLOW with --project P to register it first"
        )
    service.create_project(project)
    registered = service.register_flow(flow, project, no_url=True)
    state.progress(f"registered flow {flow.name!r} in project {project!r} as {registered}")
    return {"flow_id": registered}


def _wait_with_progress(
    state: CliState, service: SchedulingService, flow_run_id: str, timeout: Optional[float]
) -> None:
    """Wait for the run, reporting each state change; cancel it when ``timeout`` passes.

    Raises:
        FlowRunTimeoutError: The time-out passed (the run was cancelled if it could be).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last: Optional[FlowRunState] = None
    while True:
        current = service.get_state(flow_run_id)
        if current is not last:
            state.progress(f"flow run {flow_run_id}: {current}")
            last = current
        if current.is_final:
            return
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            cancelled = service.cancel(flow_run_id) if service.capabilities.cancel else False
            assert timeout is not None
            raise FlowRunTimeoutError(flow_run_id, timedelta(seconds=timeout), cancelled=cancelled)
        step = POLL_SECONDS if remaining is None else min(POLL_SECONDS, remaining)
        try:
            service.wait(flow_run_id, step)
        except FlowRunTimeoutError:
            pass


class Seconds(click.ParamType):
    """A time-out in seconds: a finite number above 0, refused as the library
    refuses it (``nan``, ``inf``, negative, too large)."""

    name = "seconds"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if isinstance(value, float):
            seconds = value
        else:
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        try:
            as_timedelta(seconds, "the time-out")
        except ValueError as err:
            self.fail(str(err), param, ctx)
        if seconds <= 0:
            self.fail(f"the time-out must be above 0 seconds, not {value}", param, ctx)
        return seconds


SECONDS = Seconds()

_timeout_option = click.option(
    "--timeout",
    type=SECONDS,
    default=None,
    metavar="SECONDS",
    help="Give up (and cancel the run) after this many seconds; default: wait.",
)
_task_option = click.option("--task", "task_name", default=None, metavar="NAME", help="Print only this task's value.")


def _flow_run_options(function: Any) -> Any:
    for option in reversed(
        [
            click.argument("flow_spec", metavar="[FLOW]", required=False),
            click.option(
                "-p",
                "--param",
                "params",
                multiple=True,
                metavar="NAME=VALUE",
                help="Flow parameter; VALUE is read as JSON when it parses, else as text. Repeatable.",
            ),
            click.option(
                "--run-config",
                "run_config_file",
                type=click.Path(exists=True, dir_okay=False),
                default=None,
                help="Run config file (YAML or JSON with 'kind'), see validate-config.",
            ),
            click.option("--flow-id", default=None, help="Server backends: run this registered flow."),
            click.option("--project", default=None, help="Server backends: register FLOW in this project first."),
            _backend_option,
        ]
    ):
        function = option(function)
    return function


def _check_run_config_kind(
    state: CliState, service: SchedulingService, config: RunConfig, path: str
) -> None:
    """A run config file must be of the kind the backend runs.

    Raises:
        SettingsError: Naming the file, its kind and the backend's kind.
    """
    wanted = service.backend.run_config_type
    if not isinstance(config, wanted):
        raise SettingsError(
            f"run config {path!r}",
            [(
                "kind",
                f"is {config.kind!r}, but the {state.settings().backend} backend runs "
                f"{wanted.kind!r} run configs",
            )],
        )


def _submit_flow_run(
    state: CliState,
    flow_spec: Optional[str],
    params: Sequence[str],
    run_config_file: Optional[str],
    flow_id: Optional[str],
    project: Optional[str],
) -> Tuple[SchedulingService, str]:
    """Check the options of `run`/`submit`, load what they name, and submit the run.

    Everything the user gave is checked (and FLOW loaded) before a backend starts.

    Returns:
        The service the run went to, and the flow run id.
    """
    _check_target_arguments(flow_spec, flow_id, project)
    parameters = parse_parameters(params)
    run_config = read_run_config(run_config_file) if run_config_file else None
    if run_config is not None:
        state.secrets = secret_values(run_config.env)
    flow = load_flow(flow_spec) if flow_spec is not None else None
    service = state.service()
    if run_config is not None and run_config_file is not None:
        _check_run_config_kind(state, service, run_config, run_config_file)
    target = _run_target(state, service, flow, flow_id, project)
    return service, service.submit(parameters, run_config, **target)


@cli.command()
@_flow_run_options
@_task_option
@_timeout_option
@pass_state
def run(
    state: CliState,
    flow_spec: Optional[str],
    params: Sequence[str],
    run_config_file: Optional[str],
    flow_id: Optional[str],
    project: Optional[str],
    backend: Optional[str],
    task_name: Optional[str],
    timeout: Optional[float],
) -> None:
    """Run FLOW, wait for it, and print its result as JSON.

    FLOW is path/to/file.py[:attribute] or package.module[:attribute]; the
    attribute defaults to 'flow'. Without --task the result is {slug: value} of
    every task. On a server backend give --flow-id, or --project to register
    FLOW first.
    """
    _use_backend(state, backend)
    state.fork_first_worker = True
    service, flow_run_id = _submit_flow_run(state, flow_spec, params, run_config_file, flow_id, project)
    state.progress(f"flow run {flow_run_id} submitted to the {state.settings().backend} backend")
    _wait_with_progress(state, service, flow_run_id, timeout)
    emit_json(state, service.result(flow_run_id, task_name))


@cli.command()
@_flow_run_options
@pass_state
def submit(
    state: CliState,
    flow_spec: Optional[str],
    params: Sequence[str],
    run_config_file: Optional[str],
    flow_id: Optional[str],
    project: Optional[str],
    backend: Optional[str],
) -> None:
    """Start a flow run on a server backend and print its id."""
    _use_backend(state, backend)
    _require_server_kind(state, "submit")
    _, flow_run_id = _submit_flow_run(state, flow_spec, params, run_config_file, flow_id, project)
    state.emit(flow_run_id)


@cli.command()
@click.argument("flow_run_id")
@pass_state
def status(state: CliState, flow_run_id: str) -> None:
    """Print the state of a flow run (server backends)."""
    _require_server_kind(state, "status")
    state.emit(str(state.service().get_state(flow_run_id)))


@cli.command()
@click.argument("flow_run_id")
@_task_option
@click.option(
    "--timeout",
    type=SECONDS,
    default=None,
    metavar="SECONDS",
    help="Give up after this many seconds (exit code 4; the run goes on); default: wait.",
)
@pass_state
def result(state: CliState, flow_run_id: str, task_name: Optional[str], timeout: Optional[float]) -> None:
    """Wait for a flow run and print its result as JSON (server backends)."""
    _require_server_kind(state, "result")
    emit_json(state, state.service().result(flow_run_id, task_name, timeout=timeout))


@cli.command()
@click.argument("flow_run_id")
@pass_state
def cancel(state: CliState, flow_run_id: str) -> None:
    """Cancel a flow run (server backends); print whether it was stopped."""
    _require_server_kind(state, "cancel")
    stopped = state.service().cancel(flow_run_id)
    state.emit("cancelled" if stopped else "not cancelled: the flow run had already ended")


def _require_server_capability(state: CliState, service: SchedulingService, command: str) -> None:
    if not service.capabilities.server:
        raise CliError(
            f"{command} needs a server backend (--backend docker or kubernetes); "
            f"the {state.settings().backend} backend has no projects"
        )


@cli.command("create-project")
@click.argument("name")
@pass_state
def create_project(state: CliState, name: str) -> None:
    """Create project NAME on the server (no error if it exists)."""
    service = state.service()
    _require_server_capability(state, service, "create-project")
    service.create_project(name)
    state.progress(f"project {name!r} is ready")


@cli.command()
@click.argument("flow_spec", metavar="FLOW")
@click.option("--project", required=True, help="Project to register the flow in (must exist).")
@click.option("--image", default=None, help="Image the flow runs in; default: the server settings' default_image.")
@click.option("--label", "labels", multiple=True, help="Label for the agents that may run it. Repeatable.")
@pass_state
def register(state: CliState, flow_spec: str, project: str, image: Optional[str], labels: Sequence[str]) -> None:
    """Register FLOW in a project on the server and print its flow id."""
    flow = load_flow(flow_spec)
    service = state.service()
    _require_server_capability(state, service, "register")
    state.emit(service.register_flow(flow, project, image, list(labels) or None, no_url=True))


@cli.command("validate-config")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@pass_state
def validate_config(state: CliState, file: str) -> None:
    """Check a run config file (YAML or JSON, with kind: local|docker|kubernetes).

    Prints the validated run config as JSON (env values masked), or one line per
    problem naming its field, and exits with 2.
    """
    state.emit(json.dumps(jsonable(public_run_config(read_run_config(file))), indent=2))


# ----------------------------------------------------------------- entry point


def _is_flow_log(record: logging.LogRecord) -> bool:
    """A log line of the flow itself (not one of the backend's own): forwarded
    from a worker or run in this process (its logger is not ours), or read from
    a server run (marked ``flow_log``)."""
    return bool(getattr(record, "flow_log", False)) or not record.name.startswith(LOGGER_NAME)


def _log_filter(state: CliState) -> Callable[[logging.LogRecord], bool]:
    # --quiet is known once the global options are parsed: the filter asks then.
    def shown(record: logging.LogRecord) -> bool:
        if not state.quiet:
            return True
        return record.levelno >= logging.WARNING and not _is_flow_log(record)

    return shown


class _MaskingFormatter(logging.Formatter):
    """``lume-scheduling: <message>``, with the run config's env values masked
    (lines of flows run in this process are not masked by a worker)."""

    def __init__(self, state: CliState) -> None:
        super().__init__(f"{PROG}: %(message)s")
        self._state = state

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record), self._state.secrets)


@contextlib.contextmanager
def _backend_logs_to_stderr(state: CliState) -> Iterator[logging.Handler]:
    """Show what backends log (the flow's own log lines, a server run's, warnings)
    on stderr while a command runs; with --quiet only the backends' own warnings
    and errors (the flow's lines are silenced, at every level). Undone afterwards.

    Yields:
        The handler, which `_adopt_prefect_logs` also puts on prefect's logger.
    """
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter(state))
    handler.addFilter(_log_filter(state))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _adopt_prefect_logs(state: CliState) -> None:
    """Flows that run in this process (the fake, ``isolated = false``) log through
    prefect's logger, whose own handler writes to stdout: while the command runs,
    their lines go through our handler instead (stderr, --quiet honoured).
    Done once, after prefect is imported; undone when the command ends."""
    ours = state._log_handler
    if "prefect" not in sys.modules or ours is None or state._prefect_adopted:
        return
    state._prefect_adopted = True
    prefect_logger = logging.getLogger("prefect")
    own = [h for h in prefect_logger.handlers if type(h) is logging.StreamHandler]
    for handler in own:
        prefect_logger.removeHandler(handler)
    prefect_logger.addHandler(ours)

    def undo() -> None:
        prefect_logger.removeHandler(ours)
        for handler in own:
            prefect_logger.addHandler(handler)

    state._undo.append(undo)


@contextlib.contextmanager
def _stdout_for_results(state: CliState) -> Iterator[None]:
    """Keep stdout for results only while a command runs.

    The real stdout is set aside for `CliState.emit`; ``sys.stdout`` becomes
    ``sys.stderr``, and when stdout is the process's file descriptor 1, fd 1 is
    pointed at stderr too, so what tasks print, here or in worker processes
    (which inherit fd 1), and what C code writes to fd 1, lands on stderr.
    Undone afterwards.
    """
    real = sys.stdout
    try:
        real.flush()
        fd = real.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    kept = -1
    if fd == 1 and sys.stderr is not None:
        kept = os.dup(1)
        os.dup2(sys.stderr.fileno(), 1)
        state.out = open(  # noqa: SIM115 - closed below
            os.dup(kept), "w", encoding=real.encoding, errors=real.errors, closefd=True
        )
    else:
        state.out = real
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = real
        if kept >= 0:
            assert state.out is not None
            state.out.close()
            os.dup2(kept, 1)
            os.close(kept)
        state.out = real


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so the backend is closed."""


@contextlib.contextmanager
def _signals_interrupt(state: CliState, restore: bool) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM interrupt the command the same way: the
    backend is closed (its local runs stopped) and one line says so. Once the
    backend is closing, further signals are ignored, so the closing finishes
    and no traceback is printed. Only in the main thread (signals are delivered
    there).

    Args:
        restore: Put the previous handlers back afterwards. The console script
            keeps ours until the interpreter exits (a late Ctrl-C is ignored).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        if state.closing or state.interrupted:
            return  # already on the way out
        state.interrupted = True
        raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if restore:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The console script: run the command line and exit with its code (see the module docstring).

    Args:
        argv: The arguments; None (the console script) reads ``sys.argv``.
    """
    state = CliState()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_signals_interrupt(state, restore=argv is not None))
            stack.enter_context(_stdout_for_results(state))
            state._log_handler = stack.enter_context(_backend_logs_to_stderr(state))
            stack.callback(lambda: [undo() for undo in reversed(state._undo)])
            _main(state, argv)
    except KeyboardInterrupt as interrupted:  # between the command and the exit
        _exit_interrupted(interrupted)
    finally:
        state.closing = True  # a signal while the interpreter exits is ignored


def _exit_interrupted(interrupted: BaseException) -> None:
    if isinstance(interrupted, _Terminated):
        click.echo(f"{PROG}: terminated", err=True)
        sys.exit(EXIT_TERMINATED)
    click.echo(f"{PROG}: aborted", err=True)
    sys.exit(EXIT_INTERRUPTED)


def _main(state: CliState, argv: Optional[Sequence[str]]) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False, obj=state)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort as abort:
        # Ctrl-C or SIGTERM: the backend was closed on the way out (its runs stopped).
        _exit_interrupted(abort.__cause__ if isinstance(abort.__cause__, KeyboardInterrupt) else abort)
    except KeyboardInterrupt as interrupted:  # outside a command (while parsing, or closing)
        _exit_interrupted(interrupted)
    except click.UsageError as err:
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        click.echo(f"{PROG}: error: {err.format_message()}{hint}", err=True)
        sys.exit(err.exit_code)
    except Exception as err:  # every error becomes one line and an exit code
        code, lines = classify(err)
        if state.debug:
            traceback.print_exception(err)
        for line in lines:
            click.echo(f"{PROG}: error: {line}", err=True)
        sys.exit(code)
    sys.exit(EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
