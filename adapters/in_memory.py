"""`InMemoryBackend`: the scheduler port held in memory, for tests and embedders.

A real implementation of `lume_scheduling.application.Backend`, not a mock: flows
really run on Prefect 1 (in this process, with
`lume_scheduling.adapters.prefect_flows.execute_flow`), so results are computed.
On top of that it can be scripted per flow name to fail, hang, return nothing,
or act as an unreachable server, and it records every call it receives so a
test can assert on what a service asked. Every piece of state lives on the
instance: two fakes share nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from lume_scheduling.adapters.prefect_flows import execute_flow, flow_parameters, is_prefect_flow
from lume_scheduling.application import Backend, BackendCapabilities, FlowRunRequest
from lume_scheduling.application.ports import DeclaredParameters
from lume_scheduling.domain.secrets import MASK
from lume_scheduling.domain import (
    BackendUnavailableError,
    FlowNotFoundError,
    FlowRunNotFoundError,
    FlowRunResult,
    FlowRunState,
    RunConfig,
)

__all__ = ["Call", "InMemoryBackend", "RegisteredFlow"]

_Method = TypeVar("_Method", bound=Callable[..., Any])


@dataclass(frozen=True)
class Call:
    """One call a caller made on an `InMemoryBackend`.

    Attributes:
        operation: The public method's name, e.g. ``"run_and_return"``.
        arguments: The arguments the caller passed, by parameter name (keyword
            arguments meant for the run config appear under their own names);
            defaults the caller left out are not listed.
    """

    operation: str
    arguments: Dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Env values are often secrets: masked, as in a run config's repr.
        return f"Call(operation={self.operation!r}, arguments={_masked_arguments(self.arguments)!r})"


def _masked_env(env: Any) -> Any:
    if isinstance(env, Mapping):
        return {name: MASK for name in env}
    return env


def _masked_arguments(arguments: Mapping[str, Any]) -> Dict[str, Any]:
    """The arguments with env values masked: ``env=`` itself, and the env of a
    run config given as a mapping (a `RunConfig` masks its own)."""
    masked = dict(arguments)
    if "env" in masked:
        masked["env"] = _masked_env(masked["env"])
    run_config = masked.get("run_config")
    if isinstance(run_config, Mapping) and "env" in run_config:
        masked["run_config"] = {**run_config, "env": _masked_env(run_config["env"])}
    return masked


@dataclass(frozen=True)
class RegisteredFlow:
    """One registered version of a flow.

    Attributes:
        flow_id: Id of this version.
        flow: The Prefect flow.
        project_name: Project it was registered in.
        version: 1 for the first registration of the flow's name in the project,
            then 2, 3, ...
        idempotency_key: The key given at registration, if any.
        options: The other registration arguments (image, labels,
            version_group_id, build, no_url, set_schedule_active), kept as given.
    """

    flow_id: str
    flow: Any
    project_name: str
    version: int
    idempotency_key: Optional[str] = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Script:
    """What a scripted flow does instead of running normally."""

    kind: str  # "failure", "hang" or "empty"
    message: Optional[str] = None
    exception_type: Optional[str] = None


@dataclass
class _FlowRun:
    """A flow run's record; mutated only under the backend's lock."""

    flow_run_id: str
    request: FlowRunRequest
    flow: Any
    flow_id: Optional[str]
    project_name: Optional[str]
    state: FlowRunState = FlowRunState.RUNNING  # it runs as soon as it exists
    result: Optional[FlowRunResult] = None
    ended: threading.Event = field(default_factory=threading.Event)


def _recorded(method: _Method) -> _Method:
    """Wrap a public `Backend` method so that the caller's call is recorded.

    Only the outermost call of a thread is recorded: ``run_and_return`` calling
    ``wait`` and ``cancel`` inside the port is not something the caller asked.
    """
    signature = inspect.signature(method)
    operation = method.__name__

    @functools.wraps(method)
    def wrapper(self: "InMemoryBackend", *args: Any, **kwargs: Any) -> Any:
        depth = getattr(self._depth, "value", 0)
        if depth == 0:
            self._record(operation, signature, args, kwargs)
        self._depth.value = depth + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self._depth.value = depth

    return wrapper  # type: ignore[return-value]


def _default_id() -> str:
    return str(uuid.uuid4())


def _check_flow(flow: Any) -> None:
    if not is_prefect_flow(flow):
        raise TypeError(f"flow must be a Prefect 1 Flow, not {type(flow).__name__}")


class InMemoryBackend(Backend):
    """A backend whose projects, flows and flow runs live in this object.

    Execution: flows run in-process with Prefect 1, **synchronously inside
    ``submit``** (and so inside ``run`` and ``run_and_return``): ``submit``
    returns with the run already in a final state, unless the flow is scripted
    to hang, in which case the run stays RUNNING until ``cancel`` (or ``close``)
    ends it CANCELLED. ``wait`` on a hanging run blocks on an event up to its
    time-out and then returns RUNNING, so time-outs behave as on a real backend.
    The run config is validated and kept (see `submitted`) but has no effect:
    ``env`` and ``working_dir`` are not applied, so the fake declares no
    ``isolation``. A flow that really never ends (not scripted) blocks
    ``submit``; script it with `script_hang` instead.

    With ``server=True`` (the default) it behaves like a Prefect Server backend:
    projects, flow registration with versions, ``run`` returning a flow run id.
    Runs take ``flow_id=`` of a registered flow, and, for convenience in tests,
    also ``flow=`` (an unregistered flow object, run as it is, with no flow id).
    With ``server=False`` it behaves like the local backend: the server
    operations raise `LocalBackendError`, runs take ``flow=``, and ``run`` waits
    and returns None (raising `FlowFailedError` when the run failed).

    Scripting (by flow name, until `clear_scripts`): `script_failure`,
    `script_hang`, `script_empty_result`, `script_unavailable`.

    ``close`` cancels hanging runs; afterwards every call of the port raises
    `BackendUnavailableError`, as on every backend (the records, `calls` and
    `submitted`, can still be read).

    Thread-safe: one lock guards the state; it is never held while a flow runs.

    Args:
        server: Whether to behave as a server backend (see above).
        run_config_type: The run config model runs are validated against.
        id_factory: Makes flow ids and flow run ids; defaults to uuid4 strings.
            Pass e.g. ``itertools.count`` based ids for deterministic tests.

    Raises:
        TypeError: ``run_config_type`` is not a `RunConfig` subclass, or
            ``id_factory`` is not callable.
    """

    def __init__(
        self,
        *,
        server: bool = True,
        run_config_type: Type[RunConfig] = RunConfig,
        id_factory: Optional[Callable[[], str]] = None,
    ) -> None:
        if not (isinstance(run_config_type, type) and issubclass(run_config_type, RunConfig)):
            raise TypeError(
                f"run_config_type must be a RunConfig subclass, not {run_config_type!r}"
            )
        if id_factory is not None and not callable(id_factory):
            raise TypeError(f"id_factory must be callable, not {type(id_factory).__name__}")
        # An instance attribute: each fake validates against its own model.
        self.run_config_type = run_config_type  # type: ignore[misc]
        self._capabilities = BackendCapabilities(
            server=bool(server), cancel=True, timeout=True, isolation=False
        )
        self._id_factory: Callable[[], str] = id_factory or _default_id
        self._lock = threading.Lock()
        self._depth = threading.local()
        self._calls: List[Call] = []
        self._projects: List[str] = []
        self._flows: Dict[Tuple[str, str], List[RegisteredFlow]] = {}
        self._flows_by_id: Dict[str, RegisteredFlow] = {}
        self._runs: Dict[str, _FlowRun] = {}
        self._used_ids: set[str] = set()
        self._scripts: Dict[str, _Script] = {}
        self._unavailable = False

    # ------------------------------------------------------------- identity

    @property
    def capabilities(self) -> BackendCapabilities:
        """``server`` as constructed; ``cancel`` and ``timeout``; no ``isolation``."""
        return self._capabilities

    def __repr__(self) -> str:
        with self._lock:
            runs, flows = len(self._runs), len(self._flows_by_id)
        return (
            f"InMemoryBackend(server={self._capabilities.server}, "
            f"run_config_type={self.run_config_type.__name__}, flows={flows}, flow_runs={runs})"
        )

    def _close(self) -> None:
        """Cancel every run that has not ended (hanging ones), waking waiters.

        The fake starts no thread or process, so nothing else is left. As every
        backend, it refuses every call afterwards (`BackendUnavailableError`).
        """
        with self._lock:
            open_runs = [run for run in self._runs.values() if not run.state.is_final]
            for run in open_runs:
                self._end_cancelled(run, "the backend was closed")

    # ------------------------------------------------- the public operations

    close = _recorded(Backend.close)
    create_project = _recorded(Backend.create_project)
    register_flow = _recorded(Backend.register_flow)
    load_flow = _recorded(Backend.load_flow)
    submit = _recorded(Backend.submit)
    get_state = _recorded(Backend.get_state)
    wait = _recorded(Backend.wait)
    get_result = _recorded(Backend.get_result)
    result = _recorded(Backend.result)
    cancel = _recorded(Backend.cancel)
    run = _recorded(Backend.run)
    run_and_return = _recorded(Backend.run_and_return)

    # ------------------------------------------------------------ scripting

    def script_failure(
        self, flow_name: str, message: str, *, exception_type: str = "RuntimeError"
    ) -> None:
        """Make runs of ``flow_name`` fail without running, with ``message``.

        The run ends FAILED; `result` raises `FlowFailedError` carrying
        ``message`` and ``exception_type``.
        """
        self._script(flow_name, _Script("failure", message, exception_type))

    def script_hang(self, flow_name: str) -> None:
        """Make runs of ``flow_name`` hang: they stay RUNNING until cancelled.

        ``wait`` blocks up to its time-out; ``cancel`` (or `close`) ends the run
        CANCELLED. Like any hanging run, ``run()`` without ``server`` (which waits
        with no time-out) then blocks until another thread cancels it.
        """
        self._script(flow_name, _Script("hang"))

    def script_empty_result(self, flow_name: str) -> None:
        """Make runs of ``flow_name`` succeed with no values (every task's None).

        The flow really runs; its task states are kept and its values dropped,
        as when a server has lost the results.
        """
        self._script(flow_name, _Script("empty"))

    def script_unavailable(self, unavailable: bool = True) -> None:
        """Act as an unreachable server: every operation raises
        `BackendUnavailableError` (after argument checks) until called with False.
        """
        with self._lock:
            self._unavailable = bool(unavailable)

    def clear_scripts(self) -> None:
        """Forget every script: flows run normally and the backend is reachable.

        Runs already hanging keep hanging until cancelled.
        """
        with self._lock:
            self._scripts.clear()
            self._unavailable = False

    # ------------------------------------------------------------ inspection

    @property
    def calls(self) -> List[Call]:
        """Every call of a public operation (``close`` included) callers made,
        in order (a copy)."""
        with self._lock:
            return list(self._calls)

    @property
    def operations(self) -> List[str]:
        """The names of the calls made, in order."""
        return [call.operation for call in self.calls]

    def clear_calls(self) -> None:
        """Forget the recorded calls (not the runs, flows or scripts)."""
        with self._lock:
            self._calls.clear()

    @property
    def submitted(self) -> List[FlowRunRequest]:
        """Every validated request that reached ``_submit``, in order (a copy).

        Empty after a call rejected for invalid run configuration: nothing ran.
        """
        with self._lock:
            return [run.request for run in self._runs.values()]

    @property
    def flow_run_ids(self) -> List[str]:
        """Ids of every flow run, in the order they were created."""
        with self._lock:
            return list(self._runs)

    @property
    def projects(self) -> List[str]:
        """Names of the projects created, in order."""
        with self._lock:
            return list(self._projects)

    def flow_versions(self, flow_name: str, project_name: str) -> List[RegisteredFlow]:
        """Every registered version of a flow, oldest first (empty if none)."""
        with self._lock:
            return list(self._flows.get((project_name, flow_name), ()))

    # --------------------------------------------------------- server hooks

    def _create_project(self, project_name: str) -> None:
        with self._lock:
            self._check_available()
            if project_name not in self._projects:
                self._projects.append(project_name)

    def _register_flow(self, flow: Any, project_name: str, **options: Any) -> str:
        _check_flow(flow)
        idempotency_key = options.pop("idempotency_key", None)
        with self._lock:
            self._check_available()
            if project_name not in self._projects:
                raise ValueError(
                    f"project_name {project_name!r} is not a project of this backend: "
                    "create it first with create_project"
                )
            versions = self._flows.setdefault((project_name, flow.name), [])
            if (
                idempotency_key is not None
                and versions
                and versions[-1].idempotency_key == idempotency_key
            ):
                return versions[-1].flow_id
            registered = RegisteredFlow(
                flow_id=self._new_id(),
                flow=flow,
                project_name=project_name,
                version=len(versions) + 1,
                idempotency_key=idempotency_key,
                options=dict(options),
            )
            versions.append(registered)
            self._flows_by_id[registered.flow_id] = registered
            return registered.flow_id

    def _load_flow(self, flow_name: str, project_name: str) -> Dict[str, Any]:
        with self._lock:
            self._check_available()
            versions = self._flows.get((project_name, flow_name))
            if not versions:
                raise FlowNotFoundError(flow_name, project_name)
            newest = versions[-1]
        return {"flow_id": newest.flow_id, "flow": newest.flow}

    # ------------------------------------------------------ flow run hooks

    def _check_target(self, flow: Any, flow_id: Optional[str]) -> None:
        """Without ``server``: ``flow=`` only. With ``server``: ``flow_id=`` of a
        registered flow, or ``flow=`` (run as it is, without a flow id).

        Raises:
            TypeError: Both or neither were given, ``flow_id=`` without
                ``server``, or ``flow`` is not a Prefect flow.
        """
        if not (self._capabilities.server and flow is not None and flow_id is None):
            super()._check_target(flow, flow_id)
        if flow is not None:
            _check_flow(flow)

    def _flow_parameters(self, flow: Any, flow_id: Optional[str]) -> Optional[DeclaredParameters]:
        if flow_id is not None:
            with self._lock:
                registered = self._flows_by_id.get(flow_id)
            if registered is None:
                return None  # _submit raises FlowNotFoundError (or unavailable)
            flow = registered.flow
        return flow.name, flow_parameters(flow)

    def _submit(self, request: FlowRunRequest) -> str:
        with self._lock:
            self._check_available()
            if request.flow_id is not None:
                registered = self._flows_by_id.get(request.flow_id)
                if registered is None:
                    raise FlowNotFoundError(flow_id=request.flow_id)
                flow, project_name = registered.flow, registered.project_name
            else:
                flow, project_name = request.flow, None
            flow_run_id = self._new_id()
            run = _FlowRun(flow_run_id, request, flow, request.flow_id, project_name)
            self._runs[flow_run_id] = run
            script = self._scripts.get(flow.name)
        if script is not None and script.kind == "hang":
            return flow_run_id
        # The flow runs outside the lock: other threads keep using the backend.
        record = self._execute(run, script)
        with self._lock:
            if not run.state.is_final:  # a cancel during the run wins
                run.result, run.state = record, record.state
                run.ended.set()
        return flow_run_id

    def _get_state(self, flow_run_id: str) -> FlowRunState:
        with self._lock:
            self._check_available()
            return self._run(flow_run_id).state

    def _wait(self, flow_run_id: str, timeout: Optional[float]) -> FlowRunState:
        with self._lock:
            self._check_available()
            run = self._run(flow_run_id)
        run.ended.wait(timeout)
        with self._lock:
            return run.state

    def _get_result(self, flow_run_id: str) -> FlowRunResult:
        with self._lock:
            self._check_available()
            run = self._run(flow_run_id)
            if run.result is None:  # the port only asks once the run is final
                raise RuntimeError(f"flow run {flow_run_id!r} has not ended")
            return run.result

    def _cancel(self, flow_run_id: str) -> bool:
        with self._lock:
            self._check_available()
            run = self._run(flow_run_id)
            if run.state.is_final:
                return False
            self._end_cancelled(run, "the flow run was cancelled")
            return True

    # -------------------------------------------------------------- helpers

    def _execute(self, run: _FlowRun, script: Optional[_Script]) -> FlowRunResult:
        if script is not None and script.kind == "failure":
            return FlowRunResult(
                flow_run_id=run.flow_run_id,
                flow_id=run.flow_id,
                state=FlowRunState.FAILED,
                message=script.message,
                flow_name=run.flow.name,
                project_name=run.project_name,
                exception_type=script.exception_type,
            )
        record = execute_flow(
            run.flow,
            run.request.parameters,
            flow_run_id=run.flow_run_id,
            flow_id=run.flow_id,
            project_name=run.project_name,
        )
        if script is not None and script.kind == "empty":
            emptied = tuple(dataclasses.replace(task, value=None) for task in record.task_runs)
            record = dataclasses.replace(record, task_runs=emptied)
        return record

    def _end_cancelled(self, run: _FlowRun, message: str) -> None:
        """End a run CANCELLED (lock held)."""
        run.state = FlowRunState.CANCELLED
        run.result = FlowRunResult(
            flow_run_id=run.flow_run_id,
            flow_id=run.flow_id,
            state=FlowRunState.CANCELLED,
            message=message,
            flow_name=run.flow.name,
            project_name=run.project_name,
        )
        run.ended.set()

    def _script(self, flow_name: str, script: _Script) -> None:
        if not isinstance(flow_name, str) or not flow_name:
            raise ValueError(f"flow_name must be a non-empty string, not {flow_name!r}")
        with self._lock:
            self._scripts[flow_name] = script

    def _check_available(self) -> None:
        """Raise as an unreachable server would (lock held)."""
        if self._unavailable:
            raise BackendUnavailableError("in-memory backend", "scripted to be unreachable")

    def _run(self, flow_run_id: str) -> _FlowRun:
        """The run with that id (lock held)."""
        try:
            return self._runs[flow_run_id]
        except KeyError:
            raise FlowRunNotFoundError(flow_run_id) from None

    def _new_id(self) -> str:
        """A fresh id from the id factory (lock held)."""
        new_id = self._id_factory()
        if not isinstance(new_id, str) or not new_id:
            raise TypeError(f"id_factory must return non-empty strings, not {new_id!r}")
        if new_id in self._used_ids:
            raise ValueError(f"id_factory returned {new_id!r} twice; ids must be unique")
        self._used_ids.add(new_id)
        return new_id

    def _record(
        self,
        operation: str,
        signature: inspect.Signature,
        args: Tuple[Any, ...],
        kwargs: Dict[str, Any],
    ) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            # The call itself is wrong; record it as given and let the method raise.
            arguments = {f"arg{index}": value for index, value in enumerate(args)}
            arguments.update(kwargs)
        else:
            arguments = {}
            for name, value in list(bound.arguments.items())[1:]:
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(value)
                else:
                    arguments[name] = value
        with self._lock:
            self._calls.append(Call(operation, arguments))
