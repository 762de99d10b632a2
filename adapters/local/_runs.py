"""The local backend's record of its flow runs, shared by both execution modes."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from lume_scheduling.domain import (
    FlowRunNotFoundError,
    FlowRunResult,
    FlowRunState,
    LocalRunConfig,
)


class RunEnded:
    """Set once, when a run ends; any number of threads wait for it.

    `threading.Event` does the same through a `threading.Condition`: a waiter
    woken by ``set`` must then take the condition's lock again, often still
    held by the setter (a second wake-up). Here a waiter waits on one lock,
    held from creation until ``set`` releases it, and passes it on at once.
    """

    def __init__(self) -> None:
        self._flag = False
        self._gate = threading.Lock()
        self._gate.acquire()

    def is_set(self) -> bool:
        """Whether the run has ended."""
        return self._flag

    def set(self) -> None:
        """Mark the run ended and wake every waiter. Call it once."""
        self._flag = True
        self._gate.release()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the run has ended or ``timeout`` seconds passed (None:
        as long as it takes). Returns whether it has ended."""
        if self._flag:
            return True
        if timeout is None:
            got = self._gate.acquire()
        elif timeout > 0:
            got = self._gate.acquire(timeout=timeout)
        else:
            got = self._gate.acquire(False)
        if got:
            self._gate.release()  # the next waiter passes too
        return self._flag


@dataclass(eq=False)
class LocalRun:
    """One flow run of a local backend.

    Attributes:
        flow_run_id: Its id (a UUID string).
        flow_name: Name of the flow.
        run_config: The resolved run config (labels, env, working_dir).
        state: SCHEDULED, RUNNING, or final once ``result`` is set.
        result: The final record; None until the run has ended.
        done: Set once the run has ended.
        job: What the execution mode needs to start the run (dropped once started).
        worker: The worker (process or thread) running it, while it runs.
    """

    flow_run_id: str
    flow_name: str
    run_config: LocalRunConfig
    state: FlowRunState = FlowRunState.SCHEDULED
    result: Optional[FlowRunResult] = None
    done: RunEnded = field(default_factory=RunEnded, repr=False)
    job: Any = field(default=None, repr=False)
    worker: Any = field(default=None, repr=False)


class RunTable:
    """Flow runs by id, with the one way a run reaches a final state (`finish`).

    All methods are thread-safe; `lock` may be held by callers that must change
    a run together with their own state.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._runs: Dict[str, LocalRun] = {}

    def new(
        self, flow_name: str, run_config: LocalRunConfig, job: Any, flow_run_id: Optional[str] = None
    ) -> LocalRun:
        """Record a new SCHEDULED run, with ``flow_run_id`` (a backend that runs
        the process pool on behalf of another names its runs) or a fresh id."""
        run = LocalRun(flow_run_id or str(uuid.uuid4()), flow_name, run_config, job=job)
        with self.lock:
            self._runs[run.flow_run_id] = run
        return run

    def get(self, flow_run_id: str) -> LocalRun:
        """The run with that id.

        Raises:
            FlowRunNotFoundError: No run of this backend has that id.
        """
        try:
            return self._runs[flow_run_id]
        except KeyError:
            raise FlowRunNotFoundError(flow_run_id) from None

    def unfinished(self) -> list[LocalRun]:
        """Runs that have not ended yet."""
        with self.lock:
            return [run for run in self._runs.values() if not run.state.is_final]

    def finish(self, run: LocalRun, result: FlowRunResult) -> bool:
        """End a run with ``result`` unless it has already ended.

        Returns:
            True if this call ended the run; False if it had ended before (the
            first final state wins: a run cancelled while its worker was
            reporting success stays cancelled).
        """
        with self.lock:
            if run.state.is_final:
                return False
            run.result = result
            run.state = result.state
            run.job = None
            run.worker = None
        run.done.set()
        return True

    def end(self, run: LocalRun, state: FlowRunState, message: str) -> bool:
        """End a run without a flow record (cancelled, crashed); see `finish`."""
        return self.finish(
            run,
            FlowRunResult(
                flow_run_id=run.flow_run_id,
                flow_id=None,
                state=state,
                message=message,
                flow_name=run.flow_name,
            ),
        )
