"""`SchedulingService`: the use-cases a LUME service calls, over any `Backend`."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Union

from lume_scheduling.domain import FlowRunResult, FlowRunState, RunConfig

from .ports import Backend, BackendCapabilities, Timeout


class SchedulingService:
    """Schedules flow runs on the backend it is given.

    The methods keep the seed's names and signatures and add the run lifecycle.
    The rules common to every backend (run config from keyword arguments, the
    warning when both are given, argument checks, time-outs, result selection)
    live once, in `Backend`'s concrete methods, so they hold whether a caller
    goes through this service or straight to a backend, as the seed's callers do.

    Args:
        backend: Where flows run.
    """

    def __init__(self, backend: Backend) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a Backend, not {type(backend).__name__}")
        self._backend = backend

    @property
    def backend(self) -> Backend:
        """The backend flows run on."""
        return self._backend

    @property
    def capabilities(self) -> BackendCapabilities:
        """What the backend can do."""
        return self._backend.capabilities

    def __repr__(self) -> str:
        return f"SchedulingService(backend={type(self._backend).__name__})"

    # The seed's operations ----------------------------------------------------

    def create_project(self, project_name: str) -> None:
        """See `Backend.create_project`."""
        self._backend.create_project(project_name)

    def register_flow(
        self,
        flow: Any,
        project_name: str,
        image: Optional[str] = None,
        labels: Optional[List[str]] = None,
        **options: Any,
    ) -> str:
        """See `Backend.register_flow`; ``options`` are its remaining arguments."""
        return self._backend.register_flow(flow, project_name, image, labels, **options)

    def load_flow(self, flow_name: str, project_name: str) -> Dict[str, Any]:
        """See `Backend.load_flow`."""
        return self._backend.load_flow(flow_name, project_name)

    def run(
        self,
        parameters: Optional[Mapping[str, Any]] = None,
        run_config: Union[RunConfig, Mapping[str, Any], None] = None,
        **kwargs: Any,
    ) -> Optional[str]:
        """See `Backend.run`; ``kwargs`` take ``flow``/``flow_id`` and run config fields."""
        return self._backend.run(parameters, run_config, **kwargs)

    def run_and_return(
        self,
        parameters: Optional[Mapping[str, Any]] = None,
        run_config: Union[RunConfig, Mapping[str, Any], None] = None,
        task_name: Optional[str] = None,
        **kwargs: Any,
    ) -> Any:
        """See `Backend.run_and_return`."""
        return self._backend.run_and_return(parameters, run_config, task_name, **kwargs)

    # The run lifecycle --------------------------------------------------------

    def submit(
        self,
        parameters: Optional[Mapping[str, Any]] = None,
        run_config: Union[RunConfig, Mapping[str, Any], None] = None,
        **kwargs: Any,
    ) -> str:
        """See `Backend.submit`."""
        return self._backend.submit(parameters, run_config, **kwargs)

    def get_state(self, flow_run_id: str) -> FlowRunState:
        """See `Backend.get_state`."""
        return self._backend.get_state(flow_run_id)

    def wait(self, flow_run_id: str, timeout: Timeout = None) -> FlowRunState:
        """See `Backend.wait`."""
        return self._backend.wait(flow_run_id, timeout)

    def get_result(self, flow_run_id: str, *, timeout: Timeout = None) -> FlowRunResult:
        """See `Backend.get_result`."""
        return self._backend.get_result(flow_run_id, timeout=timeout)

    def result(
        self, flow_run_id: str, task_name: Optional[str] = None, *, timeout: Timeout = None
    ) -> Any:
        """See `Backend.result`."""
        return self._backend.result(flow_run_id, task_name, timeout=timeout)

    def cancel(self, flow_run_id: str) -> bool:
        """See `Backend.cancel`."""
        return self._backend.cancel(flow_run_id)
