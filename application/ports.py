"""The scheduler port: `Backend`, the one interface every scheduling adapter implements.

A backend runs Prefect 1 flows somewhere (this process, worker processes, a
Prefect Server with Docker or Kubernetes agents, memory) and reports on them with
domain types only. The public methods are concrete and hold the rules common to
every backend (run config resolution, argument checks, time-outs, result
selection); adapters fill in the ``_``-prefixed hooks.

Life of a flow run, on every backend::

    submit() -> id    state: SCHEDULED or RUNNING (or already final)
    get_state(id)     any state
    wait(id, timeout) -> final state, or FlowRunTimeoutError (the run goes on)
    result(id, task)  waits, then the selected value or the run's failure
    cancel(id)        -> True if the run was stopped, False if it had ended

No prefect, requests or docker exception crosses the port: adapters translate
them into `lume_scheduling.domain` errors with ``raise ... from err``. Invalid
run configuration raises `pydantic.ValidationError`, and parameters the flow
does not declare (or required ones left out) raise `FlowParameterError`, before
a run is created. The run config's env values are masked in every record and
error the port hands back.
"""

from __future__ import annotations

import sys
import threading
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, ClassVar, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, Union

from lume_scheduling.domain import (
    RUN_CONFIG_TYPES,
    BackendUnavailableError,
    FlowParameter,
    FlowRunResult,
    FlowRunState,
    FlowRunTimeoutError,
    LocalBackendError,
    RunConfig,
    as_timedelta,
    check_flow_parameters,
)
from lume_scheduling.domain.parameters import missing_parameters
from lume_scheduling.domain.secrets import secret_values

Timeout = Union[timedelta, float, int, None]
# What a flow declares: its name (for messages) and its parameters.
DeclaredParameters = Tuple[Optional[str], Sequence[FlowParameter]]
# Runs whose env values the port remembers, per backend (oldest forgotten first).
_REMEMBERED_RUNS = 4096

# Frames of these modules are skipped when a warning names its caller...
_INTERNAL_MODULES = ("lume_scheduling.application.", "lume_scheduling.adapters.")
# ...except these, which call the port as any user does.
_CALLER_MODULES = ("lume_scheduling.adapters.testing.",)


@dataclass(frozen=True)
class BackendCapabilities:
    """What a backend can do, declared rather than discovered.

    Attributes:
        server: Projects and flow registration exist (``create_project``,
            ``register_flow``, ``load_flow``); runs are addressed by ``flow_id``
            and ``run()`` returns a flow run id at once. Without it those three
            raise `LocalBackendError`, runs take ``flow=`` and ``run()`` waits for
            the run and returns None, as the seed documents for local execution.
        cancel: A running flow run can be stopped by ``cancel``.
        timeout: ``wait`` with a time-out returns control when the time is up,
            even if the flow hangs.
        isolation: A flow that crashes or hangs cannot take the caller down, and
            its env and working directory cannot leak into the caller.
    """

    server: bool
    cancel: bool = True
    timeout: bool = True
    isolation: bool = False

    def names(self) -> List[str]:
        """Names of the capabilities that are present, sorted."""
        return sorted(f.name for f in fields(self) if getattr(self, f.name))


@dataclass(frozen=True)
class FlowRunRequest:
    """A validated request to run a flow, as handed to an adapter's ``_submit``.

    Attributes:
        parameters: Flow parameters by name (a fresh dict, owned by the request).
        run_config: The resolved run config, of the backend's run config type.
        flow: The Prefect flow to run (backends without ``server``), else None.
        flow_id: The registered flow to run (backends with ``server``), else None.
    """

    parameters: Dict[str, Any]
    run_config: RunConfig
    flow: Any = None
    flow_id: Optional[str] = None


def resolve_run_config(
    run_config_type: Type[RunConfig],
    run_config: Union[RunConfig, Mapping[str, Any], None],
    kwargs: Mapping[str, Any],
    *,
    caller: str = "run",
    backend: Optional[str] = None,
) -> RunConfig:
    """Turn ``run_config`` or keyword arguments into a run config of the right type.

    The one place the seed's rules live: keyword arguments build the run config;
    when both are given, warn and use ``run_config``. A keyword argument that is
    a field of another kind of run config (``image`` on the local backend,
    ``working_dir`` on Docker...) is left out with a `UserWarning` naming it and
    the run config kind, because LUME services pass the same keyword arguments
    to every backend (lume-services' ``Flow.run_and_return`` always passes
    ``image=``). A keyword no run config knows is still refused. A ``run_config``
    given as an object or a mapping is taken strictly: it names every field.

    Args:
        run_config_type: The backend's run config model.
        run_config: A run config, a mapping of its fields, or None.
        kwargs: Keyword arguments meant for the run config's fields.
        caller: The method's name, for the warnings.
        backend: The backend's name, for the warnings (default: the model's).

    Returns:
        A validated instance of ``run_config_type``.

    Raises:
        pydantic.ValidationError: The fields are invalid or unknown to every run
            config, or ``run_config`` is of another kind and does not fit.
        TypeError: ``run_config`` is neither a run config, a mapping nor None.
    """
    if run_config is not None and not isinstance(run_config, (RunConfig, Mapping)):
        raise TypeError(
            f"run_config must be a {run_config_type.__name__}, a mapping of its fields or None, "
            f"not {type(run_config).__name__}"
        )
    if run_config is not None and kwargs:
        warnings.warn(
            f"both run_config and keyword arguments ({', '.join(sorted(kwargs))}) were "
            f"passed to {caller}(); the flow runs with run_config",
            UserWarning,
            stacklevel=_caller_stacklevel(),
        )
    if run_config is None:
        foreign = foreign_run_config_fields(run_config_type, kwargs)
        built = run_config_type(**{name: value for name, value in kwargs.items() if name not in foreign})
        if foreign:
            warnings.warn(
                _foreign_fields_message(run_config_type, foreign, caller, backend),
                UserWarning,
                stacklevel=_caller_stacklevel(),
            )
        return built
    if isinstance(run_config, run_config_type):
        return run_config
    if isinstance(run_config, RunConfig):
        # Another kind: revalidate its fields, so the error names what does not fit.
        return run_config_type.parse_obj(run_config.dict(exclude_unset=True))
    return run_config_type.parse_obj(run_config)


def foreign_run_config_fields(
    run_config_type: Type[RunConfig], names: Iterable[str]
) -> Dict[str, List[str]]:
    """Which of ``names`` are fields of other kinds of run config, not of this one.

    Args:
        run_config_type: The run config model the names are meant for.
        names: Field names, e.g. a call's keyword arguments.

    Returns:
        ``{name: [kind, ...]}`` for each name ``run_config_type`` lacks and a
        local, docker or kubernetes run config has (kinds sorted). Names no run
        config knows are not listed: they stay errors.
    """
    own = set(run_config_type.__fields__)
    found: Dict[str, List[str]] = {}
    for name in names:
        if name in own:
            continue
        kinds = sorted(
            kind
            for kind, model in RUN_CONFIG_TYPES.items()
            if name in model.__fields__ and not issubclass(run_config_type, model)
        )
        if kinds:
            found[name] = kinds
    return found


def _foreign_fields_message(
    run_config_type: Type[RunConfig], foreign: Mapping[str, List[str]], caller: str, backend: Optional[str]
) -> str:
    who = f"{backend}.{caller}()" if backend else f"{caller}()"
    kind = getattr(run_config_type, "kind", "")
    of_kind = f" (kind {kind!r})" if kind and kind != "base" else ""
    parts = [
        f"{name} (a field of {' and '.join(kinds)} run configs)" for name, kinds in sorted(foreign.items())
    ]
    return (
        f"{who} ignores {', '.join(parts)}: this backend runs {run_config_type.__name__}{of_kind}, "
        "which has no such field"
    )


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the function calling this
    one name the first frame outside lume-scheduling's service and adapters.

    A fixed level would name an adapter whenever it overrides a public method
    and delegates to ``super()``, or the service when a caller goes through it.
    """
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(_INTERNAL_MODULES) or module.startswith(_CALLER_MODULES):
            break
        frame = frame.f_back
        level += 1
    return level


def check_parameters(parameters: Optional[Mapping[str, Any]], argument: str = "parameters") -> Dict[str, Any]:
    """Copy flow parameters into a fresh dict, checking their shape.

    Raises:
        TypeError: ``parameters`` is not a mapping with string keys.
    """
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise TypeError(
            f"{argument} must be a mapping of parameter names to values, "
            f"not {type(parameters).__name__}"
        )
    for name in parameters:
        if not isinstance(name, str):
            raise TypeError(f"{argument} names must be strings, not {type(name).__name__}")
    return dict(parameters)


class _RunSecrets:
    """The env values of the runs a backend created, to mask in what it returns
    (bounded; thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: "OrderedDict[str, Tuple[str, ...]]" = OrderedDict()

    def remember(self, flow_run_id: str, secrets: Tuple[str, ...]) -> None:
        with self._lock:
            self._runs[flow_run_id] = secrets
            self._runs.move_to_end(flow_run_id)
            while len(self._runs) > _REMEMBERED_RUNS:
                self._runs.popitem(last=False)

    def get(self, flow_run_id: str) -> Optional[Tuple[str, ...]]:
        with self._lock:
            return self._runs.get(flow_run_id)


def _check_name(argument: str, value: Any) -> str:
    """A required name: a wrong type is a TypeError, an empty one a ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{argument} must be a non-empty string, not {value!r}")
    return value


def _check_optional_name(argument: str, value: Any) -> Optional[str]:
    """As `_check_name`, with None allowed."""
    return None if value is None else _check_name(argument, value)


def _check_flag(argument: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{argument} must be True or False, not {type(value).__name__}")
    return value


def _check_labels(labels: Any) -> Optional[List[str]]:
    """None, or a list of non-empty strings (a str is refused: it is not a list)."""
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (list, tuple, set, frozenset)):
        raise TypeError(f"labels must be a list of strings, not {type(labels).__name__}")
    checked = list(labels)
    for position, label in enumerate(checked):
        if not isinstance(label, str):
            raise TypeError(f"label {position} must be a string, not {type(label).__name__}")
        if not label.strip():
            raise ValueError(f"label {position} is empty")
    return checked


class Backend(ABC):
    """Where and how a flow runs. Named as in the seed; this is the port.

    Subclasses set `run_config_type`, declare `capabilities`, and implement the
    hooks `_submit`, `_get_state`, `_wait`, `_get_result` and `_cancel` (plus
    `_create_project`, `_register_flow`, `_load_flow` when they have a server,
    and `_close` when they hold something). `_flow_parameters` tells the port
    what a flow declares, so that parameters are checked (`FlowParameterError`)
    before a run is created; without it no check is made. Implementations are
    safe to call from several threads at once.

    Arguments are checked the same way on every backend, before anything runs:
    a wrong type is a `TypeError`, an empty name a `ValueError`, both naming the
    argument. After `close`, every public method raises `BackendUnavailableError`
    (``close`` itself may be called again; ``capabilities`` can still be read).
    """

    run_config_type: ClassVar[Type[RunConfig]] = RunConfig
    # Set by `close`; an instance attribute from then on.
    _closed: bool = False

    # ------------------------------------------------------------------ identity

    @property
    @abstractmethod
    def capabilities(self) -> BackendCapabilities:
        """What this backend can do (see `BackendCapabilities`)."""

    @property
    def closed(self) -> bool:
        """Whether `close` was called: every call is refused from then on."""
        return self._closed

    def close(self) -> None:
        """Release what the backend holds (workers, connections). Idempotent.

        Postcondition: no process or thread started by the backend is left, and
        every later call raises `BackendUnavailableError`. Runs that have not
        ended are handled as the backend documents (the local backend and the
        fake cancel theirs; a server's runs go on, on the server).
        """
        self._closed = True
        self._close()

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------- server operations

    def create_project(self, project_name: str) -> None:
        """Create a project; creating one that exists is not an error.

        Raises:
            LocalBackendError: The backend has no server.
            TypeError: ``project_name`` is not a string.
            ValueError: ``project_name`` is empty.
            BackendUnavailableError: The server cannot be reached, or the
                backend was closed.
        """
        self._check_open()
        self._require_server("create_project")
        self._create_project(_check_name("project_name", project_name))

    def register_flow(
        self,
        flow: Any,
        project_name: str,
        image: Optional[str] = None,
        labels: Optional[List[str]] = None,
        idempotency_key: Optional[str] = None,
        version_group_id: Optional[str] = None,
        build: bool = True,
        no_url: bool = False,
        set_schedule_active: bool = True,
    ) -> str:
        """Register a Prefect flow in a project; registering it again makes a new
        version (unless ``idempotency_key`` matches the last registration).

        Args:
            flow: The Prefect 1 ``Flow``.
            project_name: An existing project.
            image: Image the flow runs in; None means the backend's default.
            labels: Replace the flow's labels (agents pick runs by label).
            idempotency_key: Same key as the last registration: no new version.
            version_group_id: Version group to register into.
            build: Build the flow's storage before registering.
            no_url: Do not print the flow's UI address.
            set_schedule_active: Whether the flow's schedule starts active.

        Returns:
            The flow id of the registered version.

        Raises:
            LocalBackendError: The backend has no server.
            TypeError: An argument of the wrong type (``flow`` not a Prefect
                flow, a name not a string, ``labels`` not a list of strings, a
                flag not a bool).
            ValueError: ``project_name`` is empty or unknown to the server, or
                ``image``, a label, ``idempotency_key`` or ``version_group_id`` is
                empty.
            BackendUnavailableError: The server cannot be reached, or the
                backend was closed.
        """
        self._check_open()
        self._require_server("register_flow")
        return self._register_flow(
            flow,
            _check_name("project_name", project_name),
            image=_check_optional_name("image", image),
            labels=_check_labels(labels),
            idempotency_key=_check_optional_name("idempotency_key", idempotency_key),
            version_group_id=_check_optional_name("version_group_id", version_group_id),
            build=_check_flag("build", build),
            no_url=_check_flag("no_url", no_url),
            set_schedule_active=_check_flag("set_schedule_active", set_schedule_active),
        )

    def load_flow(self, flow_name: str, project_name: str) -> Dict[str, Any]:
        """Load the newest version of a registered flow.

        Returns:
            ``{"flow_id": str, "flow": prefect Flow}``

        Raises:
            LocalBackendError: The backend has no server.
            TypeError, ValueError: A name is not a string, or is empty.
            FlowNotFoundError: No flow of that name in that project.
            BackendUnavailableError: The server cannot be reached, or the
                backend was closed.
        """
        self._check_open()
        self._require_server("load_flow")
        return self._load_flow(
            _check_name("flow_name", flow_name), _check_name("project_name", project_name)
        )

    # ----------------------------------------------------------- flow runs

    def submit(
        self,
        parameters: Optional[Mapping[str, Any]] = None,
        run_config: Union[RunConfig, Mapping[str, Any], None] = None,
        *,
        flow: Any = None,
        flow_id: Optional[str] = None,
        **kwargs: Any,
    ) -> str:
        """Start a flow run and return its id without waiting for it.

        Args:
            parameters: Flow parameters by name.
            run_config: A run config of `run_config_type` (or a mapping of its
                fields); None builds one from ``kwargs``.
            flow: The flow to run (backends without ``server``; the fake takes
                either).
            flow_id: The registered flow to run (backends with ``server``).
            **kwargs: Fields of the run config, used when ``run_config`` is None.
                A field of another kind of run config is ignored with a
                `UserWarning` (see `resolve_run_config`).

        Returns:
            The flow run id. Postcondition: the run exists, in any state.

        Raises:
            pydantic.ValidationError: Invalid run configuration; nothing ran.
            FlowParameterError: A parameter the flow does not declare, or a
                required one left out (a `ValueError`); no run was created.
            TypeError: Bad ``parameters`` or ``run_config``, the wrong one of
                ``flow``/``flow_id``, or a ``flow_id`` that is not a string.
            ValueError: An empty ``flow_id``.
            FlowNotFoundError: ``flow_id`` is unknown.
            BackendUnavailableError: The backend cannot be reached, or was closed.
        """
        self._check_open()
        request = self._request(parameters, run_config, flow, flow_id, kwargs, "submit")
        return self._start(request)

    def get_state(self, flow_run_id: str) -> FlowRunState:
        """The current state of a flow run.

        Raises:
            TypeError, ValueError: ``flow_run_id`` is not a string, or is empty.
            FlowRunNotFoundError: Unknown id.
            BackendUnavailableError: The backend cannot be reached, or was closed.
        """
        self._check_open()
        return self._get_state(_check_name("flow_run_id", flow_run_id))

    def wait(self, flow_run_id: str, timeout: Timeout = None) -> FlowRunState:
        """Wait until a flow run has ended.

        Args:
            flow_run_id: The run.
            timeout: A `timedelta` or seconds; None waits as long as it takes.

        Returns:
            The final state.

        Raises:
            FlowRunTimeoutError: Still not ended when ``timeout`` passed; the run
                is left as it is (see `cancel`).
            TypeError, ValueError: A bad ``flow_run_id`` or ``timeout``.
            FlowRunNotFoundError: Unknown id.
            BackendUnavailableError: The backend cannot be reached, or was closed.
        """
        self._check_open()
        return self._wait_final(_check_name("flow_run_id", flow_run_id), as_timedelta(timeout))

    def get_result(self, flow_run_id: str, *, timeout: Timeout = None) -> FlowRunResult:
        """The whole record of a flow run, once it has ended (waits for that).

        Raises:
            FlowRunTimeoutError: Not ended within ``timeout``.
            TypeError, ValueError: A bad ``flow_run_id`` or ``timeout``.
            FlowRunNotFoundError: Unknown id.
            BackendUnavailableError: The backend cannot be reached, or was closed.
        """
        self._check_open()
        checked = _check_name("flow_run_id", flow_run_id)
        self._wait_final(checked, as_timedelta(timeout))
        return self._masked(self._get_result(checked))

    def result(
        self, flow_run_id: str, task_name: Optional[str] = None, *, timeout: Timeout = None
    ) -> Any:
        """Wait for a flow run and return its result, selected as in `run_and_return`.

        Raises:
            FlowFailedError: The run failed or crashed (`FlowRunCancelledError` when
                it was cancelled).
            FlowRunTimeoutError: Not ended within ``timeout``, or it timed out.
            TaskNotInFlowError, TaskNotCompletedError, EmptyResultError: See
                `lume_scheduling.domain.select_task_result`.
            TypeError, ValueError: A bad ``flow_run_id``, ``task_name`` or
                ``timeout``.
            FlowRunNotFoundError: Unknown id.
            BackendUnavailableError: The backend cannot be reached, or was closed.
        """
        self._check_open()
        checked = _check_name("flow_run_id", flow_run_id)
        task_name = _check_optional_name("task_name", task_name)
        self._wait_final(checked, as_timedelta(timeout))
        return self._selected_result(checked, task_name)

    def cancel(self, flow_run_id: str) -> bool:
        """Stop a flow run that has not ended.

        Returns:
            True if the run was stopped (its state becomes CANCELLED), False if it
            had already ended (its state is unchanged).

        Raises:
            TypeError, ValueError: ``flow_run_id`` is not a string, or is empty.
            FlowRunNotFoundError: Unknown id.
            BackendUnavailableError: The backend cannot be reached, or was closed.
        """
        self._check_open()
        return self._cancel(_check_name("flow_run_id", flow_run_id))

    # ----------------------------------------------------- the seed's two calls

    def run(
        self,
        parameters: Optional[Mapping[str, Any]] = None,
        run_config: Union[RunConfig, Mapping[str, Any], None] = None,
        *,
        flow: Any = None,
        flow_id: Optional[str] = None,
        **kwargs: Any,
    ) -> Optional[str]:
        """Run a flow without returning its result.

        With ``server``: starts the run and returns its flow run id at once.
        Without: waits for the run and returns None, as the seed documents for
        local execution, raising if it did not succeed (the original dropped
        the final state, so a failed flow looked like success).

        Raises:
            pydantic.ValidationError: Invalid run configuration; nothing ran.
            FlowFailedError: (without ``server``) The run did not succeed.
            See `submit` for the rest.
        """
        self._check_open()
        request = self._request(parameters, run_config, flow, flow_id, kwargs, "run")
        flow_run_id = self._start(request)
        if self.capabilities.server:
            return flow_run_id
        self._wait_final(flow_run_id, None)
        failure = self._masked(self._get_result(flow_run_id)).failure()
        if failure is not None:
            raise failure
        return None

    def run_and_return(
        self,
        parameters: Optional[Mapping[str, Any]] = None,
        run_config: Union[RunConfig, Mapping[str, Any], None] = None,
        task_name: Optional[str] = None,
        *,
        flow: Any = None,
        flow_id: Optional[str] = None,
        timeout: Timeout = None,
        cancel_on_timeout: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run a flow, wait for it, and return its result.

        Args:
            parameters, run_config, flow, flow_id, **kwargs: As for `submit`.
            task_name: The task whose value to return; None returns
                ``{slug: value}`` of every task.
            timeout: A `timedelta` or seconds; None waits as long as it takes.
            cancel_on_timeout: Cancel the run when the time-out passes.

        Returns:
            One task's value; ``{slug: value}`` when several tasks match or none
            is named (`lume_scheduling.domain.select_task_result`).

        Raises:
            pydantic.ValidationError: Invalid run configuration; nothing ran.
            FlowFailedError: The run failed or crashed (`FlowRunCancelledError` when
                it was cancelled).
            FlowRunTimeoutError: The time-out passed (``cancelled`` tells whether
                the run was stopped). It is a `RuntimeError` too.
            TaskNotInFlowError, TaskNotCompletedError, EmptyResultError: As in
                `select_task_result`.
            TypeError, ValueError: A bad ``task_name``, ``timeout`` or
                ``cancel_on_timeout``; see `submit` for the others.
            FlowNotFoundError, BackendUnavailableError: As for `submit`.
        """
        self._check_open()
        delta = as_timedelta(timeout)
        task_name = _check_optional_name("task_name", task_name)
        _check_flag("cancel_on_timeout", cancel_on_timeout)
        request = self._request(parameters, run_config, flow, flow_id, kwargs, "run_and_return")
        flow_run_id = self._start(request)
        try:
            self._wait_final(flow_run_id, delta)
        except FlowRunTimeoutError:
            cancelled = self._cancel(flow_run_id) if cancel_on_timeout else False
            raise FlowRunTimeoutError(
                flow_run_id, delta, cancelled=cancelled, flow_id=request.flow_id
            ) from None
        return self._selected_result(flow_run_id, task_name)

    # ------------------------------------------------------------ shared rules

    def _check_open(self) -> None:
        """Raise `BackendUnavailableError` once the backend was closed."""
        if self._closed:
            raise BackendUnavailableError(type(self).__name__, "it was closed")

    def _wait_final(self, flow_run_id: str, delta: Optional[timedelta]) -> FlowRunState:
        """`wait` without the checks: the final state, or FlowRunTimeoutError."""
        state = self._wait(flow_run_id, None if delta is None else delta.total_seconds())
        if not state.is_final:
            raise FlowRunTimeoutError(flow_run_id, delta)
        return state

    def _selected_result(self, flow_run_id: str, task_name: Optional[str]) -> Any:
        """The selected value of a run known to be final, or its failure."""
        record = self._masked(self._get_task_result(flow_run_id, task_name))
        failure = record.failure()
        if failure is not None:
            raise failure
        return record.select(task_name)

    def _require_server(self, operation: str) -> None:
        if not self.capabilities.server:
            raise LocalBackendError(operation)

    def _request(
        self,
        parameters: Optional[Mapping[str, Any]],
        run_config: Union[RunConfig, Mapping[str, Any], None],
        flow: Any,
        flow_id: Optional[str],
        kwargs: Mapping[str, Any],
        caller: str,
    ) -> FlowRunRequest:
        config = resolve_run_config(
            self.run_config_type, run_config, kwargs, caller=caller, backend=type(self).__name__
        )
        checked = check_parameters(parameters)
        self._check_target(flow, flow_id)
        self._check_flow_parameters(checked, flow, flow_id)
        return FlowRunRequest(checked, config, flow=flow, flow_id=flow_id)

    def _check_flow_parameters(self, parameters: Mapping[str, Any], flow: Any, flow_id: Optional[str]) -> None:
        """The parameter rule, the same on every backend: each name given must be
        a parameter of the flow, each required parameter must be given (or be
        supplied by the backend, see `_default_parameters`).

        Raises:
            FlowParameterError: Naming the unknown and missing parameters and
                listing the flow's parameters.
        """
        declared = self._flow_parameters(flow, flow_id)
        if declared is None:
            return
        flow_name, flow_parameters = declared
        supplied: Collection[str] = ()
        if missing_parameters(flow_parameters, parameters):
            supplied = self._default_parameters(flow, flow_id)
        check_flow_parameters(flow_name, flow_parameters, parameters, supplied_elsewhere=supplied)

    def _start(self, request: FlowRunRequest) -> str:
        """Hand a checked request to the adapter, and remember the env values of
        the run so that what is read back about it is masked."""
        flow_run_id = self._submit(request)
        self._run_secrets_store().remember(flow_run_id, secret_values(request.run_config.env))
        return flow_run_id

    def _run_secrets_store(self) -> _RunSecrets:
        store = self.__dict__.get("_port_run_secrets")
        if store is None:
            # setdefault is atomic: two threads asking at once share one store.
            store = self.__dict__.setdefault("_port_run_secrets", _RunSecrets())
        return store

    def _masked(self, record: FlowRunResult) -> FlowRunResult:
        """``record`` with the env values of its run's run config masked."""
        return record.masked(self._secrets_of_run(record.flow_run_id, record))

    def _secrets_of_run(self, flow_run_id: str, record: FlowRunResult) -> Sequence[str]:
        """The texts to mask in what is shown of a run: the env values of its run
        config, longest first. Default: those of the runs this backend created
        (the most recent thousands); adapters that can read a run's run config
        back (a server) extend it to other runs.
        """
        return self._run_secrets_store().get(flow_run_id) or ()

    def _check_target(self, flow: Any, flow_id: Optional[str]) -> None:
        """Check that the run names what this backend runs.

        Default: backends with ``server`` take ``flow_id``, others take ``flow``.

        Raises:
            TypeError: The wrong one, both, or neither was given, or ``flow_id``
                is not a string (a Flow object passed as ``flow_id``).
            ValueError: ``flow_id`` is empty.
        """
        if flow_id is not None:
            _check_name("flow_id", flow_id)
        if (flow is None) == (flow_id is None):
            wanted = "flow_id=" if self.capabilities.server else "flow="
            raise TypeError(f"give exactly one of flow= or flow_id= (this backend takes {wanted})")
        if self.capabilities.server and flow_id is None:
            raise TypeError("this backend runs registered flows: pass flow_id=, not flow=")
        if not self.capabilities.server and flow is None:
            raise TypeError("this backend has no server: pass the flow itself as flow=")

    # ------------------------------------------------------------ adapter hooks

    def _close(self) -> None:
        """Release what the backend holds; called once by each `close`. Default:
        nothing to release."""

    def _create_project(self, project_name: str) -> None:
        raise LocalBackendError("create_project")

    def _register_flow(self, flow: Any, project_name: str, **options: Any) -> str:
        raise LocalBackendError("register_flow")

    def _load_flow(self, flow_name: str, project_name: str) -> Dict[str, Any]:
        raise LocalBackendError("load_flow")

    @abstractmethod
    def _submit(self, request: FlowRunRequest) -> str:
        """Start the run; return its id. Translate third-party errors."""

    @abstractmethod
    def _get_state(self, flow_run_id: str) -> FlowRunState:
        """The run's current state, or FlowRunNotFoundError."""

    @abstractmethod
    def _wait(self, flow_run_id: str, timeout: Optional[float]) -> FlowRunState:
        """Block until the run is final or ``timeout`` seconds pass; return the
        state then (not final on time-out). Never raise for the time-out."""

    @abstractmethod
    def _get_result(self, flow_run_id: str) -> FlowRunResult:
        """The record of a run known to be final."""

    @abstractmethod
    def _cancel(self, flow_run_id: str) -> bool:
        """Stop the run if it is not final; True if it was stopped."""

    def _flow_parameters(self, flow: Any, flow_id: Optional[str]) -> Optional[DeclaredParameters]:
        """The name and the parameters of the flow a run names, for the
        parameter rule; None when the backend cannot tell (no check is made).

        Raises:
            FlowNotFoundError: ``flow_id`` is unknown.
        """
        return None

    def _default_parameters(self, flow: Any, flow_id: Optional[str]) -> Collection[str]:
        """Names of parameters the backend supplies itself when a run leaves them
        out (a Prefect Server flow group's default parameters). Asked only when a
        required parameter is missing. Default: none."""
        return ()

    def _get_task_result(self, flow_run_id: str, task_name: Optional[str]) -> FlowRunResult:
        """The record of a run known to be final, for selecting ``task_name``.

        Values must be present for the task runs ``task_name`` selects (all of them
        when None); others may be left None, so a backend that reads values from
        remote storage reads only those. Default: `_get_result`.
        """
        return self._get_result(flow_run_id)
