"""lume-services' scheduling interfaces, working on lume-scheduling.

A LUME service migrating from ``lume_services.services.scheduling.backends``
changes that import to this module and keeps its code:

- `Backend` (also named `LumeServicesBackend`): the base class for backends
  written to lume-services' interface, the five methods ``create_project``,
  ``register_flow``, ``load_flow``, ``run`` and ``run_and_return`` (for example a
  Slurm backend). Such a class cannot subclass the port directly (the port's
  abstract hooks are not implemented by it); this base derives the port's run
  lifecycle (``submit``, ``get_state``, ``wait``, ``result``, ``get_result``,
  ``cancel``) from the class's own ``run_and_return``, so the class works behind
  `SchedulingService` and in the contract suite, and it declares what that
  derivation can honestly do (see `LumeServicesBackend`).
- `LocalRunConfig`, `DockerRunConfig`, `KubernetesRunConfig`: the domain's run
  configs with lume-services' ``build()`` (the Prefect run config), which
  backends written to lume-services' interface call. The domain's own models
  have no ``build()``: mapping to prefect is an adapter's job.
- `PrefectConfig`, `PrefectServerConfig`, `PrefectUIConfig`,
  `PrefectAgentConfig`, `PrefectTelemetryConfig`: lume-services' configuration
  shape (see `lume_scheduling.adapters.server.config`).
- `LocalBackend`, `DockerBackend`, `KubernetesBackend`: the backends.
"""

from __future__ import annotations

import functools
import re
import sys
import warnings
from abc import abstractmethod
import threading
import uuid
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Type, TypeVar, cast

from prefect.run_configs import LocalRun
from prefect.run_configs import RunConfig as PrefectRunConfig
from pydantic import BaseModel, Extra, PrivateAttr, root_validator

from lume_scheduling.application.ports import Backend as _Port
from lume_scheduling.application.ports import (
    BackendCapabilities,
    DeclaredParameters,
    FlowRunRequest,
    foreign_run_config_fields,
)
from lume_scheduling.domain import (
    DockerRunConfig as _DockerRunConfig,
)
from lume_scheduling.domain import (
    FlowFailedError,
    FlowRunCancelledError,
    FlowRunNotFoundError,
    FlowRunResult,
    FlowRunState,
    LocalBackendError,
    RunConfig,
    TaskRun,
    TaskRunState,
)
from lume_scheduling.domain import (
    KubernetesRunConfig as _KubernetesRunConfig,
)
from lume_scheduling.domain import (
    LocalRunConfig as _LocalRunConfig,
)

from .local import LocalBackend
from .prefect_flows import flow_parameters, is_prefect_flow
from .server import (
    DockerBackend,
    KubernetesBackend,
    PrefectAgentConfig,
    PrefectConfig,
    PrefectServerConfig,
    PrefectTelemetryConfig,
    PrefectUIConfig,
    to_prefect_run_config,
)

__all__ = [
    "Backend",
    "DockerBackend",
    "DockerRunConfig",
    "KubernetesBackend",
    "KubernetesRunConfig",
    "LocalBackend",
    "LocalRunConfig",
    "LumeServicesBackend",
    "PrefectAgentConfig",
    "PrefectConfig",
    "PrefectServerConfig",
    "PrefectTelemetryConfig",
    "PrefectUIConfig",
]

_Method = TypeVar("_Method", bound=Callable[..., Any])
# lume-services' five methods, in the order its Backend declares them.
SEED_METHODS = ("create_project", "register_flow", "load_flow", "run", "run_and_return")
_SERVER_OPERATIONS = frozenset(SEED_METHODS[:3])
# Prefect 1 slugs are "<name>[-<tag>...]-<count>".
_SLUG_COUNT = re.compile(r"-\d+$")


def _stacklevel_outside(*prefixes: str) -> int:
    """The ``stacklevel`` naming the first frame (above the caller of this
    function) whose module starts with none of ``prefixes``."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None:
        if not frame.f_globals.get("__name__", "").startswith(prefixes):
            break
        frame = frame.f_back
        level += 1
    return level


class _TakesOtherKindsFields(RunConfig):
    """lume-services' run configs ignored unknown fields (pydantic's default),
    and lume-services' ``Flow`` passes ``image=`` to every backend: here a field
    of another kind of run config is left out with a `UserWarning` naming it; a
    key no run config knows is still refused."""

    @root_validator(pre=True)
    def _leave_out_other_kinds_fields(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        model = cast(Type[RunConfig], cls)  # a class method, as every pydantic validator
        foreign = foreign_run_config_fields(model, values)
        unknown = set(values) - set(model.__fields__) - set(foreign)
        if not foreign or unknown:
            return values  # nothing to leave out, or refused anyway: no warning
        named = ", ".join(f"{name} (a field of {' and '.join(kinds)} run configs)" for name, kinds in sorted(foreign.items()))
        warnings.warn(
            f"{model.__name__} ignores {named}, as lume-services' run configs did",
            UserWarning,
            stacklevel=_stacklevel_outside("pydantic", __name__),
        )
        return {name: value for name, value in values.items() if name not in foreign}


class LocalRunConfig(_TakesOtherKindsFields, _LocalRunConfig):
    """The domain's `LocalRunConfig` with lume-services' ``build()``; fields of
    other kinds of run config are ignored with a warning."""

    def build(self) -> PrefectRunConfig:
        """The Prefect ``LocalRun`` of this run config (labels, env, working_dir)."""
        return LocalRun(
            env=None if self.env is None else dict(self.env),  # type: ignore[arg-type]  # None: no env
            working_dir=self.working_dir,  # type: ignore[arg-type]  # None: the current directory
            labels=list(self.labels),
        )


class DockerRunConfig(_TakesOtherKindsFields, _DockerRunConfig):
    """The domain's `DockerRunConfig` with lume-services' ``build()``; fields of
    other kinds of run config are ignored with a warning."""

    def build(self) -> PrefectRunConfig:
        """The Prefect ``DockerRun`` of this run config."""
        return to_prefect_run_config(self)


class KubernetesRunConfig(_TakesOtherKindsFields, _KubernetesRunConfig):
    """The domain's `KubernetesRunConfig` with lume-services' ``build()``;
    fields of other kinds of run config are ignored with a warning."""

    def build(self) -> PrefectRunConfig:
        """The Prefect ``KubernetesRun`` of this run config (with the packaged job
        template when it names none)."""
        return to_prefect_run_config(self)


def _guarded(name: str, method: _Method) -> _Method:
    """Wrap one of the class's own five methods with what every backend does:
    refuse calls after ``close``; a bare `LocalBackendError` from a server
    operation is given the operation's name."""

    @functools.wraps(method)
    def guarded(self: "LumeServicesBackend", *args: Any, **kwargs: Any) -> Any:
        self._check_open()
        try:
            return method(self, *args, **kwargs)
        except LocalBackendError as err:
            if err.operation is None and name in _SERVER_OPERATIONS:
                raise LocalBackendError(name) from err
            raise

    guarded.__lume_scheduling_guarded__ = True  # type: ignore[attr-defined]
    return guarded  # type: ignore[return-value]


class LumeServicesBackend(BaseModel, _Port):
    """Base class for a backend written to lume-services' ``Backend`` interface.

    Subclass it as lume-services' documentation says to subclass its
    ``Backend`` (a pydantic model: declare the backend's settings as fields) and
    implement the five methods with lume-services' signatures::

        create_project(project_name) -> None
        register_flow(flow, project_name, image) -> flow id
        load_flow(flow_name, project_name) -> {"flow_id": ..., "flow": ...}
        run(parameters, run_config, **kwargs) -> flow run id | None
        run_and_return(parameters, run_config, task_name, **kwargs) -> result

    Your ``run`` and ``run_and_return`` are called as they are (they build the run
    config from keyword arguments themselves, as lume-services asks); your five
    methods refuse calls after ``close`` like every backend, and a bare
    ``LocalBackendError()`` raised by a server operation gets its name.

    The rest of the port is derived from your ``run_and_return``:

    - ``submit(parameters, run_config, flow=... | flow_id=..., **fields)`` checks
      its arguments and builds the run config of `run_config_type` as every
      backend does, then calls ``run_and_return(parameters, run_config, None,
      flow=... | flow_id=...)`` and keeps the ``{slug: value}`` it returns as the
      run's record, under a new flow run id. The run has ended when ``submit``
      returns: a `FlowFailedError` (or `FlowRunCancelledError`) it raised ends
      the run FAILED (CANCELLED), with its message and exception type; any other
      exception passes through ``submit`` unchanged, and no run is recorded.
    - ``get_state``, ``wait``, ``result``, ``get_result`` and ``cancel`` read that
      record. Tasks are named from the flow's own tasks when ``flow=`` is given;
      with ``flow_id=`` only, a task's name is its slug without the trailing
      ``-<count>``. Mapped children are not addressable (your
      ``run_and_return`` gives one value per slug).

    Capabilities, declared honestly: ``cancel``, ``timeout`` and ``isolation``
    are False (a run is over when ``submit`` returns, so there is nothing to
    stop, and a time-out cannot interrupt it); ``server`` is the class attribute
    `server`, False by default: set ``server = True`` when your server
    operations work and runs take ``flow_id=``.

    Attributes:
        server: Whether the class talks to a server (class attribute).
        run_config_type: The run config ``submit`` builds (class attribute);
            default this module's `LocalRunConfig`, which has ``build()``.
    """

    server: ClassVar[bool] = False
    run_config_type: ClassVar[Type[RunConfig]] = LocalRunConfig

    _closed: bool = PrivateAttr(default=False)
    _records: Dict[str, FlowRunResult] = PrivateAttr(default_factory=dict)
    _records_lock: Any = PrivateAttr(default_factory=threading.Lock)

    class Config:
        extra = Extra.forbid
        arbitrary_types_allowed = True
        underscore_attrs_are_private = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in SEED_METHODS:
            method = cls.__dict__.get(name)
            if (
                callable(method)
                and not getattr(method, "__isabstractmethod__", False)
                and not getattr(method, "__lume_scheduling_guarded__", False)
            ):
                setattr(cls, name, _guarded(name, method))

    @property
    def capabilities(self) -> BackendCapabilities:
        """``server`` as the class declares; no cancel, time-out or isolation."""
        return BackendCapabilities(server=bool(type(self).server), cancel=False, timeout=False, isolation=False)

    # ------------------------------------------------ lume-services' interface

    @abstractmethod
    def create_project(self, project_name: str) -> None:  # type: ignore[override]
        """Create a project (raise `LocalBackendError` without a server)."""

    @abstractmethod
    def register_flow(self, flow: Any, project_name: str, image: Optional[str] = None, **kwargs: Any) -> str:  # type: ignore[override]
        """Register a flow and return its flow id (raise `LocalBackendError`
        without a server)."""

    @abstractmethod
    def load_flow(self, flow_name: str, project_name: str) -> Dict[str, Any]:  # type: ignore[override]
        """Return ``{"flow_id": ..., "flow": ...}`` (raise `LocalBackendError`
        without a server)."""

    @abstractmethod
    def run(  # type: ignore[override]
        self, parameters: Optional[Mapping[str, Any]], run_config: Optional[RunConfig], **kwargs: Any
    ) -> Optional[str]:
        """Run a flow without returning its result: the flow run id with a
        server, else None once the run has succeeded."""

    @abstractmethod
    def run_and_return(  # type: ignore[override]
        self,
        parameters: Optional[Mapping[str, Any]],
        run_config: Optional[RunConfig],
        task_name: Optional[str],
        **kwargs: Any,
    ) -> Any:
        """Run a flow and return its result; with ``task_name=None``,
        ``{slug: value}`` of every task."""

    # -------------------------------------------------- the derived lifecycle

    def _flow_parameters(self, flow: Any, flow_id: Optional[str]) -> Optional[DeclaredParameters]:
        # Only a flow object says what it declares; with flow_id the subclass's
        # own run_and_return is the judge.
        if not is_prefect_flow(flow):
            return None
        return flow.name, flow_parameters(flow)

    def _submit(self, request: FlowRunRequest) -> str:
        target: Dict[str, Any] = (
            {"flow_id": request.flow_id} if request.flow_id is not None else {"flow": request.flow}
        )
        flow_run_id = str(uuid.uuid4())
        flow_name = getattr(request.flow, "name", None)
        try:
            values = self.run_and_return(dict(request.parameters), request.run_config, None, **target)
        except FlowFailedError as err:
            record = FlowRunResult(
                flow_run_id=flow_run_id,
                flow_id=request.flow_id,
                state=FlowRunState.CANCELLED if isinstance(err, FlowRunCancelledError) else FlowRunState.FAILED,
                message=err.exception_message,
                flow_name=flow_name or err.flow_name,
                exception_type=err.exception_type,
            )
        else:
            record = self._success_record(flow_run_id, request, values)
        with self._records_lock:
            self._records[flow_run_id] = record
        return flow_run_id

    def _success_record(self, flow_run_id: str, request: FlowRunRequest, values: Any) -> FlowRunResult:
        flow_name = getattr(request.flow, "name", None)
        if not isinstance(values, Mapping):
            return FlowRunResult(
                flow_run_id=flow_run_id,
                flow_id=request.flow_id,
                state=FlowRunState.FAILED,
                message=(
                    f"{type(self).__name__}.run_and_return(task_name=None) returned "
                    f"{type(values).__name__}, not a mapping of task slugs to values"
                ),
                flow_name=flow_name,
                exception_type="TypeError",
            )
        names = _task_names(request.flow)
        task_runs = tuple(
            TaskRun(
                slug=str(slug),
                name=names.get(str(slug), _SLUG_COUNT.sub("", str(slug))),
                state=TaskRunState.SUCCESS,
                value=value,
            )
            for slug, value in values.items()
        )
        return FlowRunResult(
            flow_run_id=flow_run_id,
            flow_id=request.flow_id,
            state=FlowRunState.SUCCESS,
            task_runs=task_runs,
            flow_name=flow_name,
        )

    def _record(self, flow_run_id: str) -> FlowRunResult:
        with self._records_lock:
            record = self._records.get(flow_run_id)
        if record is None:
            raise FlowRunNotFoundError(flow_run_id)
        return record

    def _get_state(self, flow_run_id: str) -> FlowRunState:
        return self._record(flow_run_id).state

    def _wait(self, flow_run_id: str, timeout: Optional[float]) -> FlowRunState:
        return self._record(flow_run_id).state  # every run has ended when submit returns

    def _get_result(self, flow_run_id: str) -> FlowRunResult:
        return self._record(flow_run_id)

    def _cancel(self, flow_run_id: str) -> bool:
        self._record(flow_run_id)  # unknown ids raise; known runs have ended
        return False


def _task_names(flow: Any) -> Dict[str, str]:
    """``{slug: task name}`` of a Prefect flow, or ``{}``."""
    slugs = getattr(flow, "slugs", None)
    if not isinstance(slugs, Mapping):
        return {}
    return {str(slug): str(getattr(task, "name", slug)) for task, slug in slugs.items()}


Backend = LumeServicesBackend
