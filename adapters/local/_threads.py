"""In-process execution (``LocalBackend(isolated=False)``), for debugging.

Each run executes in a runner thread of this process (at most ``max_workers``
at once), so breakpoints, monkeypatches and unpicklable flows all work. What it
cannot guarantee, by its nature:

* env and working_dir are process-wide: while a run that sets them executes,
  every thread of the process sees them. Such runs hold an exclusive lock (runs
  that change neither share it), and the caller's values are put back after.
* cancel and time-outs cannot kill a thread: the run is marked CANCELLED at
  once and its thread gets an asynchronous `FlowRunStopped` exception, which
  stops Python code at its next bytecode. Code blocked in a C call (a long
  ``time.sleep``, a socket read) only stops when that call returns; until then
  the thread goes on and, if the run set env/working_dir, those stay applied and
  later runs that set them wait.
* a flow that crashes the interpreter takes the caller down with it.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterator, Optional, Set

from lume_scheduling.adapters.prefect_flows import execute_flow
from lume_scheduling.domain import (
    BackendUnavailableError,
    FlowRunResult,
    FlowRunState,
    LocalRunConfig,
)

from ._runs import LocalRun, RunTable

_CLOSE_JOIN_SECONDS = 5.0


class FlowRunStopped(BaseException):
    """Raised inside a runner thread to stop an in-process run (cancel, time-out,
    close). A BaseException, so that Prefect's ``except Exception`` handlers do not
    turn it into a failed task and carry on with the flow."""


class _SharedExclusiveLock:
    """Many holders in shared mode, or one in exclusive mode; waiting exclusive
    holders go first, so env-changing runs are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting_exclusive:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting_exclusive += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._waiting_exclusive -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@dataclass
class ThreadJob:
    """What a runner thread needs for one run."""

    flow: Any
    parameters: Dict[str, Any]
    env: Dict[str, str]
    working_dir: str


@dataclass(eq=False)
class _Slot:
    """A runner thread's hold on a running run."""

    thread_id: int
    stoppable: bool = False
    retired: bool = False


def _raise_in_thread(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(FlowRunStopped)
    )


class ThreadRuntime:
    """Runs flow runs in runner threads of this process; see the module docstring."""

    def __init__(self, runs: RunTable, max_workers: int) -> None:
        self.runs = runs
        self.max_workers = max_workers
        self._pending: Deque[LocalRun] = deque()
        self._active = 0
        self._threads: Set[threading.Thread] = set()
        self._closing = False
        self._environment = _SharedExclusiveLock()
        self._counter = 0

    def prepare(self, flow: Any, parameters: Dict[str, Any], config: LocalRunConfig) -> ThreadJob:
        """The run's job; working_dir None becomes the caller's directory now."""
        return ThreadJob(flow, parameters, dict(config.env or {}), config.working_dir or os.getcwd())

    def start(self, run: LocalRun) -> None:
        """Queue a run and make sure a runner thread will take it.

        Raises:
            BackendUnavailableError: The backend was closed.
        """
        with self.runs.lock:
            if self._closing:
                raise BackendUnavailableError("local backend", "it was closed")
            self._pending.append(run)
            self._add_runner_locked()

    def cancel(self, run: LocalRun, message: str) -> bool:
        """End a run as CANCELLED; a running one gets `FlowRunStopped` in its thread."""
        with self.runs.lock:
            if run.state.is_final:
                return False
            slot = run.worker
            self.runs.end(run, FlowRunState.CANCELLED, message)
            try:
                self._pending.remove(run)
            except ValueError:
                pass
            if isinstance(slot, _Slot) and not slot.retired:
                # Its thread may stay busy until the flow stops: let another take work.
                slot.retired = True
                self._active -= 1
                if slot.stoppable:
                    _raise_in_thread(slot.thread_id)
                if self._pending:
                    self._add_runner_locked()
        return True

    def close(self) -> None:
        """Cancel what has not ended and wait (a bounded time) for runner threads."""
        with self.runs.lock:
            self._closing = True
            for run in self.runs.unfinished():
                self.cancel(run, "the backend was closed before the run ended")
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(_CLOSE_JOIN_SECONDS)

    def live_threads(self) -> int:
        """Number of runner threads alive now."""
        return sum(1 for thread in list(self._threads) if thread.is_alive())

    # ---------------------------------------------------------------- runners

    def _add_runner_locked(self) -> None:
        if self._active >= self.max_workers or not self._pending:
            return
        self._active += 1
        self._counter += 1
        thread = threading.Thread(
            target=self._runner, name=f"lume-local-run-{self._counter}", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def _runner(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                with self.runs.lock:
                    if self._closing or not self._pending:
                        self._active -= 1
                        return
                    run = self._pending.popleft()
                    slot = _Slot(threading.get_ident())
                    job: ThreadJob = run.job
                    run.state = FlowRunState.RUNNING
                    run.worker = slot
                    run.job = None
                self._execute(run, slot, job)
                if slot.retired:
                    return  # cancel already gave our place to another thread
        finally:
            with self.runs.lock:
                self._threads.discard(me)

    def _execute(self, run: LocalRun, slot: _Slot, job: ThreadJob) -> None:
        changes = bool(job.env) or job.working_dir != os.getcwd()
        hold = self._environment.exclusive() if changes else self._environment.shared()
        record: Optional[FlowRunResult] = None
        try:
            with hold:
                saved_env = {name: os.environ.get(name) for name in job.env}
                saved_cwd = os.getcwd()
                try:
                    os.environ.update(job.env)
                    os.chdir(job.working_dir)
                    try:
                        with self.runs.lock:
                            if run.state.is_final:
                                return
                            slot.stoppable = True
                        record = execute_flow(job.flow, job.parameters, flow_run_id=run.flow_run_id)
                    finally:
                        with self.runs.lock:
                            slot.stoppable = False
                except OSError as err:
                    record = FlowRunResult(
                        flow_run_id=run.flow_run_id,
                        flow_id=None,
                        state=FlowRunState.FAILED,
                        message=f"working_dir cannot be entered: {err}",
                        flow_name=run.flow_name,
                        exception_type=type(err).__name__,
                    )
                finally:
                    for name, value in saved_env.items():
                        if value is None:
                            os.environ.pop(name, None)
                        else:
                            os.environ[name] = value
                    os.chdir(saved_cwd)
        except FlowRunStopped:
            return  # cancelled: the run already ended CANCELLED
        if record is not None:
            self.runs.finish(run, record)
