"""The cluster's side of `DaskBackend`: what runs in Dask workers and on the scheduler.

Each flow run is one Dask task, `run_flow`. Dask cannot interrupt a running
task, so the task does not run the flow itself: it hands it to a warm child
process of the Dask worker, through the local backend's process pool
(`lume_scheduling.adapters.local._processes.ProcessRuntime`, whose workers run
`_run_path.RunPath`: the same worker-side run path, results, failures, env,
working_dir and clean-up as `LocalBackend`). The task thread waits for the
child's result and returns it (a `FlowRunResult`, secrets masked).

* `RunProcesses` (a worker plugin, on every worker of the cluster) owns that
  pool, as many children as the worker has threads. When Dask cancels a
  running run (``client.cancel``: the caller's `cancel` or time-out, or every
  client letting go of it), the worker's task state goes from ``executing`` to
  ``released``; the plugin's ``transition`` hook sees it and kills the child
  (its process group and every process it started). The task then returns a
  CANCELLED record, which Dask drops.
* `RunLedger` (a scheduler plugin) records which worker started each run: a
  worker tells the scheduler when it starts a flow (a fire-and-forget message
  on its own stream to the scheduler, no round trip). A Dask worker that dies
  mid-run makes the scheduler start the task again elsewhere; the ledger then
  annotates the task with the worker that started it, and the second start
  sees the annotation and returns CRASHED without running the flow again, so
  a killed worker fails only its run. (A worker that dies within the few
  milliseconds between starting a run and its stream reaching the scheduler
  leaves no record: Dask then starts that run again, as it would any task.)
  Entries go when the run ends.

Both are registered by `DaskBackend` when it connects, idempotently (a second
backend on the same cluster shares them). Workers and scheduler must be able to
import lume_scheduling (and prefect), as for any function sent to Dask.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from distributed import get_worker
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from lume_scheduling.adapters.local._payload import FlowPayload
from lume_scheduling.adapters.local._processes import Job, ProcessRuntime
from lume_scheduling.adapters.local._runs import LocalRun, RunTable
from lume_scheduling.adapters.local._worker import secrets_of
from lume_scheduling.domain import FlowRunResult, FlowRunState
from lume_scheduling.domain.secrets import secret_values

KEY_PREFIX = "lume-run-"
WORKER_PLUGIN = "lume-scheduling-runs"
SCHEDULER_PLUGIN = "lume-scheduling-ledger"
STARTED_OP = "lume-scheduling-started"
STARTED_ANNOTATION = "lume-scheduling-started-on"
LOG_TOPIC = "lume-scheduling-log"
WORKER_LOGGER = "lume_scheduling.dask.worker"
# Cancels that reached a worker before (or without) their task: bounded.
_EARLY_CANCELS = 1024
# Log record fields sent to the caller (msgpack-serialisable ones only).
_LOG_FIELDS = (
    "name",
    "levelno",
    "levelname",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "thread",
    "threadName",
    "process",
    "processName",
    "msg",
    "exc_text",
    "stack_info",
    "flow_name",
    "task_name",
    "task_slug",
    "task_run_id",
    "flow_run_id",
)


def run_key(flow_run_id: str) -> str:
    """The Dask key of a flow run's task."""
    return f"{KEY_PREFIX}{flow_run_id}"


@dataclass(frozen=True)
class RunRequest:
    """What the caller sends for one run (the Dask task's argument).

    Attributes:
        flow_run_id: The run's id.
        flow_name: The flow's name, for records made without running it.
        digest: Digest of ``flow`` (the children keep flows by digest).
        flow: The flow pickled by `_payload.flow_payload`.
        parameters: The parameters pickled by `_payload.dumps_parameters`.
        env: The run config's env, set on top of the worker's environment.
        working_dir: Where the run runs; None: the worker's own directory.
        sys_path: The caller's ``sys.path``; the worker's own entries follow it.
        log_level: Records below it are not sent back.
    """

    flow_run_id: str
    flow_name: str
    digest: bytes
    flow: bytes = field(repr=False)
    parameters: bytes = field(repr=False)
    env: Optional[Dict[str, str]] = field(default=None, repr=False)
    working_dir: Optional[str] = None
    sys_path: Tuple[str, ...] = field(default=(), repr=False)
    log_level: int = logging.WARNING


def _record(request: RunRequest, state: FlowRunState, message: str) -> FlowRunResult:
    return FlowRunResult(
        flow_run_id=request.flow_run_id,
        flow_id=None,
        state=state,
        message=message,
        flow_name=request.flow_name,
    )


def run_flow(request: RunRequest) -> FlowRunResult:
    """The Dask task of one flow run: run it in a child process of this worker.

    Returns:
        The run's record with the env values of its run config masked; never
        raises for what the flow does.
    """
    worker = get_worker()
    plugin = worker.plugins.get(WORKER_PLUGIN)
    if not isinstance(plugin, RunProcesses):
        return _record(
            request,
            FlowRunState.CRASHED,
            f"the Dask worker {worker.address} has no {WORKER_PLUGIN!r} plugin (it was removed)",
        )
    return plugin.execute(worker.get_current_task(), request)


class _ForwardToCaller(logging.Handler):
    """Sends the children's log records to the caller as Dask events."""

    def __init__(self, worker: Any) -> None:
        super().__init__(logging.NOTSET)
        self._worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {}
            for name in _LOG_FIELDS:
                value = getattr(record, name, None)
                if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                    fields[name] = value
            self._worker.log_event(LOG_TOPIC, fields)
        except Exception:  # noqa: BLE001 - a log line must never fail a run
            self.handleError(record)


class RunProcesses(WorkerPlugin):
    """A Dask worker's pool of warm child processes that run flows; see the
    module docstring."""

    idempotent = True
    name = WORKER_PLUGIN

    def __init__(self) -> None:
        self._worker: Any = None
        self._lock = threading.Lock()
        self._table: Optional[RunTable] = None
        self._runtime: Optional[ProcessRuntime] = None
        self._running: Dict[str, LocalRun] = {}
        self._early_cancels: "OrderedDict[str, None]" = OrderedDict()
        self._handler: Optional[logging.Handler] = None
        self._closed = False

    def __getstate__(self) -> Dict[str, Any]:
        return {}  # sent before setup: nothing of a live pool travels

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def setup(self, worker: Any) -> None:
        self._worker = worker
        # A nanny starts its worker as a daemonic process, and multiprocessing
        # refuses children to those (so that none is orphaned when it is
        # terminated). Ours are not orphaned: each child ends when it reads EOF
        # on the pool's liveness pipe, i.e. when this worker dies.
        process = multiprocessing.current_process()
        if process.daemon:
            try:
                process.daemon = False
            except AssertionError:  # pragma: no cover - started by another way
                pass
        logger = logging.getLogger(WORKER_LOGGER)
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.DEBUG)  # each run's own level filters in its child
        self._handler = _ForwardToCaller(worker)
        logger.addHandler(self._handler)
        self._table = RunTable()
        start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self._runtime = ProcessRuntime(self._table, max(1, int(worker.state.nthreads)), start_method, logger)
        # The children start now, in the pool's own thread: the first runs
        # need not wait for the fork server to import prefect.
        self._runtime.prestart()

    def teardown(self, worker: Any) -> None:
        with self._lock:
            self._closed = True
            runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()  # cancels what runs, stops every child and thread
        if self._handler is not None:
            logging.getLogger(WORKER_LOGGER).removeHandler(self._handler)
            self._handler = None

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        # On the worker's event loop: cheap checks first, every task goes through here.
        if start in ("executing", "long-running") and finish in ("released", "cancelled"):
            if isinstance(key, str) and key.startswith(KEY_PREFIX):
                self._cancel(key)

    def _cancel(self, key: str) -> None:
        with self._lock:
            run = self._running.get(key)
            runtime = self._runtime
            if run is None:
                self._early_cancels[key] = None
                while len(self._early_cancels) > _EARLY_CANCELS:
                    self._early_cancels.popitem(last=False)
                return
        if runtime is not None:
            runtime.cancel(run, "the flow run was cancelled")

    def execute(self, key: str, request: RunRequest) -> FlowRunResult:
        """Run one flow in a child process and wait for it (the task's thread)."""
        worker = self._worker
        task = worker.state.tasks.get(key)
        started_on = (getattr(task, "annotations", None) or {}).get(STARTED_ANNOTATION)
        if started_on:
            return _record(
                request,
                FlowRunState.CRASHED,
                f"the Dask worker running the flow died ({started_on}); the flow run is not started again",
            )
        # Fire and forget, from the worker's loop (its stream is not thread-safe).
        worker.loop.add_callback(worker.batched_send, {"op": STARTED_OP, "key": key})
        environ = dict(os.environ)
        environ.update(request.env or {})
        sys_path = list(request.sys_path)
        sys_path += [entry for entry in sys.path if entry not in sys_path]
        job = Job(
            payload=FlowPayload(request.digest, request.flow),
            parameters=request.parameters,
            environ=environ,
            working_dir=request.working_dir or os.getcwd(),
            sys_path=sys_path,
            log_level=request.log_level,
            secrets=secrets_of(request.env),
        )
        with self._lock:
            runtime, table = self._runtime, self._table
            if self._closed or runtime is None or table is None:
                return _record(request, FlowRunState.CRASHED, "the Dask worker was closing")
            run = table.new(request.flow_name, None, job, flow_run_id=request.flow_run_id)  # type: ignore[arg-type]
            self._running[key] = run
            cancelled_early = key in self._early_cancels
            self._early_cancels.pop(key, None)
        try:
            if cancelled_early:
                runtime.cancel(run, "the flow run was cancelled")
            else:
                try:
                    runtime.start(run)
                except Exception as err:  # noqa: BLE001 - closed meanwhile
                    table.end(run, FlowRunState.CRASHED, f"the Dask worker was closing ({err})")
            run.done.wait()
        finally:
            with self._lock:
                self._running.pop(key, None)
        assert run.result is not None
        return run.result.masked(secret_values(request.env))

    def running(self) -> int:
        """Runs executing in this worker's children now (for tests)."""
        with self._lock:
            return len(self._running)

    def child_pids(self) -> List[int]:
        """Pids of this worker's live child processes (for tests)."""
        runtime = self._runtime
        if runtime is None:
            return []
        return [w.process.pid for w in list(runtime._workers) if not w.dead and w.process.pid is not None]


class RunLedger(SchedulerPlugin):
    """The scheduler's record of which worker started each run that has not
    ended; see the module docstring."""

    idempotent = True
    name = SCHEDULER_PLUGIN

    def __init__(self) -> None:
        self._started: Dict[str, str] = {}
        self._scheduler: Any = None

    def __getstate__(self) -> Dict[str, Any]:
        return {}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    async def start(self, scheduler: Any) -> None:
        self._scheduler = scheduler
        scheduler.stream_handlers[STARTED_OP] = self.started

    def has_started(self, key: str) -> bool:
        """Whether a worker has said it started the flow of ``key`` (and the run
        has not ended)."""
        return key in self._started

    def started(self, key: str, worker: str, **_: Any) -> None:
        """A worker's message: it starts the flow of ``key`` now."""
        task = self._scheduler.tasks.get(key)
        if task is not None and task.processing_on is not None and task.processing_on.address == worker:
            self._started[key] = worker

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        # On the scheduler's loop, for every task: one dict lookup for others.
        worker = self._started.get(key) if isinstance(key, str) else None
        if worker is None:
            return
        if finish in ("memory", "erred", "forgotten"):
            del self._started[key]
        elif start == "processing":
            # Started, and leaving its worker without a result: that worker is gone.
            del self._started[key]
            task = self._scheduler.tasks.get(key)
            if task is not None:
                task.annotations = {**(task.annotations or {}), STARTED_ANNOTATION: worker}
