"""`LocalBackend`: Prefect 1 flows run on this machine, honouring the run config.

By default each run executes in a warm worker process (see `_processes`), so a
flow that hangs can be timed out or cancelled for real, a flow that crashes its
interpreter ends CRASHED while the caller goes on, and the run config's env and
working_dir never leak into the caller. ``isolated=False`` runs flows in threads
of this process instead (see `_threads` for what that cannot guarantee).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from multiprocessing import util as multiprocessing_util
from typing import Any, Dict, List, Mapping, Optional, Union

from lume_scheduling.adapters.prefect_flows import flow_parameters, is_prefect_flow
from lume_scheduling.application.ports import (
    Backend,
    BackendCapabilities,
    DeclaredParameters,
    FlowRunRequest,
    Timeout,
    check_parameters,
)
from lume_scheduling.domain import (
    FlowRunResult,
    FlowRunState,
    LocalRunConfig,
)

from ._processes import START_METHODS, ProcessRuntime
from ._runs import RunTable
from ._threads import ThreadRuntime

LOGGER_NAME = "lume_scheduling.local"

def _default_start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _shutdown(runtime: Union[ProcessRuntime, ThreadRuntime]) -> None:
    runtime.close()


def _parameters(data: Any, parameters: Any) -> Optional[Mapping[str, Any]]:
    """The flow parameters, given as the seed's ``data`` or as ``parameters``."""
    if data is not None and parameters is not None:
        raise TypeError("give the flow parameters once: as data or as parameters=, not both")
    if data is None:
        return check_parameters(parameters, "parameters")
    return check_parameters(data, "data")


class LocalBackend(Backend):
    """Runs Prefect 1 flows on this machine: the embedded default backend.

    ``run``, ``run_and_return`` and ``submit`` take the flow parameters as
    ``data`` (the seed's name; ``parameters=`` works too) and the flow as
    ``flow=``. Keyword arguments that are not the backend's own build a
    `LocalRunConfig` (``labels``, ``env``, ``working_dir``). ``create_project``,
    ``register_flow`` and ``load_flow`` raise `LocalBackendError`.

    A run sees the caller's environment as it was when the run was submitted,
    plus the run config's ``env``, and runs in its ``working_dir`` (None: the
    caller's directory at submit time); the caller's ``os.environ`` and current
    directory are never changed (isolated mode) or are put back after the run
    (in-process mode). The run config of each run, labels included, is kept:
    see `get_run_config` and `get_labels`.

    Log records of a run reach this process's logging through the logger
    ``lume_scheduling.local`` (records keep their original ``name``, e.g.
    ``prefect.TaskRunner``, and carry a ``flow_run_id`` attribute). Records below
    that logger's effective level at submit time are not even sent. Values of
    the run config's env (4 characters or longer) are masked in forwarded lines.

    Args:
        max_workers: Most runs executing at once (worker processes, or threads
            when not isolated). Default: ``os.cpu_count()``.
        isolated: True (default) runs flows in worker processes; False runs them
            in threads of this process, for debugging.
        start_method: How worker processes start: ``"forkserver"`` (default on
            POSIX: a fork server that has imported prefect once forks each
            worker) or ``"spawn"`` (a fresh interpreter per worker). ``"fork"``
            is refused: the backend has a manager thread, and forking a process
            with threads can deadlock the child.
        max_runs_per_worker: Runs a worker process serves before it exits and
            a fresh one takes its place; None (default) keeps workers as long
            as the backend lives; 1 gives every run a fresh process. Between
            runs a worker puts back what a run may change in it (see the
            README, "What a warm worker keeps"). Isolated mode only.
        fork_first_worker: Fork the first worker from this very process, when
            it has no other thread at the first submit (then forking is safe):
            a process that has just imported prefect gets a warm worker at
            once instead of waiting for the fork server to import prefect. That
            worker starts from this process as it is then (its prefect config,
            its modules, its open files, less the backend's own pipes); later
            workers come from the fork server. Meant for one-shot programs
            such as the command line. Isolated mode only.

    Raises:
        ValueError: ``max_workers`` or ``max_runs_per_worker`` is not a positive
            integer, ``start_method`` is not one of the above, or either is
            given with ``isolated=False``.
        TypeError: ``isolated`` or ``fork_first_worker`` is not a bool.
    """

    run_config_type = LocalRunConfig

    def __init__(
        self,
        *,
        max_workers: Optional[int] = None,
        isolated: bool = True,
        start_method: Optional[str] = None,
        max_runs_per_worker: Optional[int] = None,
        fork_first_worker: bool = False,
    ) -> None:
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive integer, not {max_workers!r}")
        if not isinstance(isolated, bool):
            raise TypeError(f"isolated must be True or False, not {isolated!r}")
        if start_method is not None and not isolated:
            raise ValueError("start_method applies to isolated runs only (isolated=True)")
        if max_runs_per_worker is not None:
            if (
                isinstance(max_runs_per_worker, bool)
                or not isinstance(max_runs_per_worker, int)
                or max_runs_per_worker < 1
            ):
                raise ValueError(
                    f"max_runs_per_worker must be a positive integer or None, not {max_runs_per_worker!r}"
                )
            if not isolated:
                raise ValueError("max_runs_per_worker applies to isolated runs only (isolated=True)")
        if not isinstance(fork_first_worker, bool):
            raise TypeError(f"fork_first_worker must be True or False, not {fork_first_worker!r}")
        if fork_first_worker and not isolated:
            raise ValueError("fork_first_worker applies to isolated runs only (isolated=True)")
        start_method = start_method or _default_start_method()
        available = [m for m in START_METHODS if m in multiprocessing.get_all_start_methods()]
        if start_method not in available:
            raise ValueError(
                f"start_method must be one of {', '.join(map(repr, available))}, not {start_method!r}"
                + (" (fork is unsafe: the backend runs a thread)" if start_method == "fork" else "")
            )
        self._max_workers = max_workers
        self._isolated = isolated
        self._start_method = start_method if isolated else None
        self._max_runs_per_worker = max_runs_per_worker
        self._logger = logging.getLogger(LOGGER_NAME)
        self._runs = RunTable()
        self._runtime: Union[ProcessRuntime, ThreadRuntime]
        if isolated:
            self._runtime = ProcessRuntime(
                self._runs, max_workers, start_method, self._logger, max_runs_per_worker, fork_first_worker
            )
        else:
            self._runtime = ThreadRuntime(self._runs, max_workers)
        # Stops workers and threads when the backend is garbage collected or the
        # interpreter exits, without a registry of ours. multiprocessing's own
        # finalizers (what multiprocessing.Pool uses) run at exit *before* it joins
        # child processes, which a plain weakref.finalize does not guarantee: idle
        # non-daemon workers would then keep the interpreter from exiting.
        self._finalizer = multiprocessing_util.Finalize(
            self, _shutdown, args=(self._runtime,), exitpriority=10
        )

    def __repr__(self) -> str:
        mode = f"isolated, {self._start_method}" if self._isolated else "in-process"
        return f"LocalBackend(max_workers={self._max_workers}, {mode})"

    # ---------------------------------------------------------------- identity

    @property
    def capabilities(self) -> BackendCapabilities:
        """No server; cancel and time-outs (hard kills when isolated); isolation
        only when isolated."""
        return BackendCapabilities(server=False, cancel=True, timeout=True, isolation=self._isolated)

    @property
    def isolated(self) -> bool:
        """Whether flows run in worker processes."""
        return self._isolated

    @property
    def max_workers(self) -> int:
        """Most runs executing at once."""
        return self._max_workers

    @property
    def start_method(self) -> Optional[str]:
        """How worker processes start; None when not isolated."""
        return self._start_method

    @property
    def fork_first_worker(self) -> bool:
        """Whether the first worker is forked from this process (see the class docstring)."""
        return isinstance(self._runtime, ProcessRuntime) and self._runtime.fork_first_worker

    @property
    def max_runs_per_worker(self) -> Optional[int]:
        """Runs a worker process serves before a fresh one replaces it; None: no limit."""
        return self._max_runs_per_worker

    def _close(self) -> None:
        """Cancel the runs that have not ended, stop every worker process and
        helper thread (`close`; afterwards every call raises
        `BackendUnavailableError`). Idempotent; the workers are also stopped on
        garbage collection and at interpreter exit.

        In-process mode waits up to 5 s for each runner thread; a flow blocked in
        a C call may outlive that as a daemon thread (see the module `_threads`).
        """
        self._finalizer()

    # ------------------------------------------------------ the seed's calls

    def run(  # type: ignore[override]
        self,
        data: Optional[Mapping[str, Any]] = None,
        run_config: Union[LocalRunConfig, Mapping[str, Any], None] = None,
        *,
        flow: Any = None,
        parameters: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        """Run a flow and wait for it; return None once it has succeeded.

        Args:
            data: Flow parameters by name (the seed's name; or ``parameters=``).
            run_config: A `LocalRunConfig` (or a mapping of its fields); None
                builds one from ``kwargs`` (both given: warn, use run_config).
            flow: The Prefect 1 flow to run.
            **kwargs: `LocalRunConfig` fields: ``labels``, ``env``, ``working_dir``.

        Raises:
            pydantic.ValidationError: Invalid run configuration; nothing ran.
            TypeError: ``flow`` is not a Prefect flow or cannot be sent to a
                worker process (the message says so and points at
                ``isolated=False``); bad ``data``.
            FlowFailedError: The run failed (flow name, run id, the exception's
                type and message), crashed, or was cancelled
                (`FlowRunCancelledError`).
            BackendUnavailableError: The backend was closed.
        """
        params = _parameters(data, parameters)
        super().run(params, run_config, flow=flow, **kwargs)
        return None

    def run_and_return(  # type: ignore[override]
        self,
        data: Optional[Mapping[str, Any]] = None,
        run_config: Union[LocalRunConfig, Mapping[str, Any], None] = None,
        task_name: Optional[str] = None,
        *,
        flow: Any = None,
        timeout: Timeout = None,
        cancel_on_timeout: bool = True,
        parameters: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> Any:
        """Run a flow, wait for it, and return its result.

        Args:
            data, run_config, flow, **kwargs: As for `run`.
            task_name: The task whose value to return; None returns
                ``{slug: value}`` of every task.
            timeout: A `timedelta` or seconds; None waits as long as it takes.
            cancel_on_timeout: Stop the run when the time-out passes (isolated:
                its worker process is killed).

        Returns:
            Selected as `lume_scheduling.domain.select_task_result` says.

        Raises:
            FlowRunTimeoutError: The time-out passed (also a RuntimeError).
            TaskNotInFlowError, TaskNotCompletedError, EmptyResultError: As in
                `select_task_result`.
            See `run` for the rest.
        """
        params = _parameters(data, parameters)
        return super().run_and_return(
            params,
            run_config,
            task_name,
            flow=flow,
            timeout=timeout,
            cancel_on_timeout=cancel_on_timeout,
            **kwargs,
        )

    def submit(  # type: ignore[override]
        self,
        data: Optional[Mapping[str, Any]] = None,
        run_config: Union[LocalRunConfig, Mapping[str, Any], None] = None,
        *,
        flow: Any = None,
        parameters: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> str:
        """Start a flow run and return its id at once (see `run` for arguments
        and errors raised before anything runs)."""
        params = _parameters(data, parameters)
        return super().submit(params, run_config, flow=flow, **kwargs)

    # ------------------------------------------------------------ accessors

    def get_run_config(self, flow_run_id: str) -> LocalRunConfig:
        """The run config a run was submitted with (its ``repr`` masks env values).

        Raises:
            FlowRunNotFoundError: Unknown id.
            BackendUnavailableError: The backend was closed.
        """
        self._check_open()
        return self._runs.get(flow_run_id).run_config

    def get_labels(self, flow_run_id: str) -> List[str]:
        """The labels of a run's run config.

        Raises:
            FlowRunNotFoundError: Unknown id.
            BackendUnavailableError: The backend was closed.
        """
        self._check_open()
        return list(self._runs.get(flow_run_id).run_config.labels)

    # ---------------------------------------------------------------- hooks

    def _submit(self, request: FlowRunRequest) -> str:
        flow = request.flow
        if not is_prefect_flow(flow):
            raise TypeError(f"flow must be a Prefect 1 Flow, not {type(flow).__name__}")
        config = request.run_config
        assert isinstance(config, LocalRunConfig)
        job = self._runtime.prepare(flow, request.parameters, config)
        run = self._runs.new(flow.name, config, job)
        try:
            self._runtime.start(run)
        except Exception:
            self._runs.end(run, FlowRunState.CANCELLED, "the backend was closed")
            raise
        return run.flow_run_id

    def _flow_parameters(self, flow: Any, flow_id: Optional[str]) -> Optional[DeclaredParameters]:
        if not is_prefect_flow(flow):
            return None  # _submit says what is wrong with it
        return flow.name, flow_parameters(flow)

    def _get_state(self, flow_run_id: str) -> FlowRunState:
        return self._runs.get(flow_run_id).state

    def _wait(self, flow_run_id: str, timeout: Optional[float]) -> FlowRunState:
        run = self._runs.get(flow_run_id)
        run.done.wait(timeout)
        return run.state

    def _get_result(self, flow_run_id: str) -> FlowRunResult:
        run = self._runs.get(flow_run_id)
        run.done.wait()
        assert run.result is not None
        return run.result

    def _cancel(self, flow_run_id: str) -> bool:
        return self._runtime.cancel(self._runs.get(flow_run_id), "the flow run was cancelled")

    # ------------------------------------------------------------ diagnostics

    def _stats(self) -> Dict[str, int]:
        """Numbers for tests and benchmarks (not part of the contract)."""
        if isinstance(self._runtime, ProcessRuntime):
            return {
                "workers_alive": self._runtime.live_workers(),
                "workers_started": self._runtime.workers_started,
                "flows_sent": self._runtime.flows_sent,
            }
        return {"threads_alive": self._runtime.live_threads()}
