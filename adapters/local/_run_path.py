"""The worker-side run path: one flow run from what the caller sends, in a process kept clean.

`RunPath` is what a worker process does with a run, whatever carried the
request there (the local backend's pipes today; a backend with other worker
processes can call it the same way)::

    path = RunPath()   # once per process, in its main thread, before any run
    outcome = path.run(SentRun(flow_run_id, flow_bytes, parameters_bytes,
                               environ, working_dir, sys_path))
    outcome.result     # a FlowRunResult; what the flow does never raises here
    outcome.retire     # None, or why this process must not take another run

Creating a `RunPath` turns on the fast path for Prefect's context in this
process (see `_fast_context`; it stays off, with a reason in ``fast_path``, if
prefect is not the version it was written against), makes this thread's
timers precise (see `precise_timers`) and records the process state that `run`
puts back after each run.

Per run, in this order: ``sys.path`` becomes the caller's; the flow is
unpickled afresh from its bytes (so a run never sees what an earlier run did to
its flow object; `prepare_next` may do that while the process is idle, after
the previous run was reported); the parameters are unpickled; ``os.environ`` is made equal to
``environ``; the working directory is entered; the flow runs (`execute_flow`).
Then, before the next run, this process is put back as it was when the
`RunPath` was created:

* ``prefect.config`` and the main thread's ``prefect.context`` (its keys, and
  every mapping of its config), so a task that changed either does not reach
  the next run, and Prefect's in-memory result cache (``cache_for``) starts
  empty each run, as in a fresh process;
* resource limits (``resource.setrlimit``), signal handlers, the signal mask,
  interval timers (``signal.setitimer``, ``signal.alarm``), the umask, the
  main thread's timer slack;
* the handlers of the root and ``prefect`` loggers.

A limit whose hard value a run lowered cannot be raised again by an
unprivileged process; then ``retire`` says so and the process must stop after
reporting. What persists from run to run: modules a run imported and their
globals, threads it started and left running, files it left open, and
anything else a run changes in the process that is not listed above
(``max_runs_per_worker=1`` gives each run a fresh process).
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import signal
import sys
from dataclasses import dataclass, field
from operator import is_
from typing import Any, Dict, List, Optional, Tuple

import cloudpickle
import prefect

from lume_scheduling.adapters.prefect_flows import execute_flow
from lume_scheduling.domain import FlowRunResult, FlowRunState

from . import _fast_context
from ._fast_context import ConfigSnapshot, FastPath

_RLIMITS = tuple(
    (name, getattr(resource, name)) for name in sorted(dir(resource)) if name.startswith("RLIMIT_")
)
_TIMERS = tuple(
    getattr(signal, name) for name in ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF") if hasattr(signal, name)
)
_UNCATCHABLE = {getattr(signal, name) for name in ("SIGKILL", "SIGSTOP") if hasattr(signal, name)}
try:
    # signal.getsignal wraps this one and turns its answer into an enum member
    # (through an exception for a function handler): 30 times slower.
    from _signal import getsignal as _getsignal
except ImportError:  # pragma: no cover - another interpreter
    _getsignal = signal.getsignal


# prctl(2) options (Linux); the slack is in nanoseconds and per thread.
_PR_SET_TIMERSLACK = 29
_PR_GET_TIMERSLACK = 30
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover - no libc to call
    _prctl = None


def timer_slack() -> Optional[int]:
    """This thread's timer slack in nanoseconds; None where it cannot be read."""
    if _prctl is None:
        return None
    value = int(_prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0))
    return value if value >= 0 else None


def set_timer_slack(nanoseconds: int) -> bool:
    """Set this thread's timer slack. True if it was set."""
    return _prctl is not None and int(_prctl(_PR_SET_TIMERSLACK, nanoseconds, 0, 0, 0)) == 0


def precise_timers() -> bool:
    """Timer slack of 1 ns for this thread (and threads it starts later).

    Linux lets a timed sleep of a normal thread end up to its timer slack
    (50 us by default) late, so that wake-ups can be grouped. Prefect's
    ``flow.run()`` calls ``time.sleep(0)`` twice per run (no naptime before
    and after a pass), and each of those sleeps then lasted about 50 us more
    than asked, a tenth of a small run in a warm worker. With 1 ns a sleep
    ends when asked; nothing else changes (worker processes only).

    Returns:
        True if the slack was set.
    """
    return set_timer_slack(1)


@dataclass
class SentRun:
    """What the caller sends for one run.

    Attributes:
        flow_run_id: The run's id (Prefect's ``flow_run_id`` in context).
        flow: The flow, pickled with cloudpickle.
        parameters: The parameters by name, pickled with cloudpickle.
        environ: The whole environment the run sees (values are often secrets).
        working_dir: The directory the run runs in.
        sys_path: The caller's ``sys.path``, so modules it imports load here too.
    """

    flow_run_id: str
    flow: bytes = field(repr=False)
    parameters: bytes = field(repr=False)
    environ: Dict[str, str] = field(repr=False)
    working_dir: str
    sys_path: List[str] = field(repr=False)


@dataclass
class RunOutcome:
    """What one run gave.

    Attributes:
        result: The run's record (FAILED with the reason when the flow, its
            parameters or the working directory could not be loaded).
        retire: None, or why this process must not take another run.
    """

    result: FlowRunResult
    retire: Optional[str] = None


def _failed(flow_run_id: str, flow_name: Optional[str], err: BaseException, what: str) -> FlowRunResult:
    return FlowRunResult(
        flow_run_id=flow_run_id,
        flow_id=None,
        state=FlowRunState.FAILED,
        message=f"{what}: {err}",
        flow_name=flow_name,
        exception_type=type(err).__name__,
    )


def apply_environ(target: Dict[str, str]) -> None:
    """Make os.environ equal to ``target`` with as few putenv calls as possible."""
    current = os.environ
    for name in [name for name in current if name not in target]:
        del current[name]
    for name, value in target.items():
        if current.get(name) != value:
            current[name] = value


class ProcessState:
    """What a run may change in this process and `reset` puts back; see the
    module docstring. Taken in the main thread."""

    def __init__(self, base_config: Optional[ConfigSnapshot] = None) -> None:
        context = prefect.context
        self._context = context
        self._context_items = dict(context.__dict__)
        self._base_config = base_config or ConfigSnapshot(context.config)
        self._global_config = ConfigSnapshot(prefect.config)
        self._rlimits = {name: (number, resource.getrlimit(number)) for name, number in _RLIMITS}
        self._handlers = {sig: _getsignal(sig) for sig in signal.valid_signals() if sig not in _UNCATCHABLE}
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        self._umask = _umask()
        self._timer_slack = timer_slack()
        self._loggers = {
            name: list(logging.getLogger(name).handlers) for name in ("", "prefect")
        }

    def reset(self) -> Optional[str]:
        """Put back what changed.

        Returns:
            None, or why this process cannot be made as it was (it must retire).
        """
        problems: List[str] = []
        items = self._context.__dict__
        if len(items) != len(self._context_items) or any(
            items.get(key, items) is not value for key, value in self._context_items.items()
        ):
            items.clear()
            items.update(self._context_items)
        for config in (self._base_config, self._global_config):
            if not config.intact():
                config.restore()
        for which in _TIMERS:
            if signal.getitimer(which) != (0.0, 0.0):
                signal.setitimer(which, 0)
        for sig, handler in self._handlers.items():
            if handler is not None and _getsignal(sig) is not handler:
                try:
                    signal.signal(sig, handler)
                except (OSError, ValueError, RuntimeError) as err:
                    problems.append(f"the handler of {_signal_name(sig)} cannot be put back ({err})")
        if signal.pthread_sigmask(signal.SIG_BLOCK, []) != self._mask:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
        for name, (number, limits) in self._rlimits.items():
            if resource.getrlimit(number) != limits:
                try:
                    resource.setrlimit(number, limits)
                except (OSError, ValueError) as err:
                    problems.append(f"{name} cannot be put back to {limits} ({err})")
        if _umask() != self._umask:
            os.umask(self._umask)
        if self._timer_slack is not None and timer_slack() != self._timer_slack:
            set_timer_slack(self._timer_slack)
        for name, handlers in self._loggers.items():
            logger = logging.getLogger(name)
            if len(logger.handlers) != len(handlers) or not all(map(is_, logger.handlers, handlers)):
                logger.handlers[:] = handlers
        return "; ".join(problems) or None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _umask() -> int:
    current = os.umask(0o077)
    os.umask(current)
    return current


class RunPath:
    """Runs flows sent by a caller in this process, one at a time; see the
    module docstring.

    Attributes:
        fast_path: Whether the fast path is on here, and if not, why.
    """

    def __init__(self) -> None:
        self.fast_path: FastPath = _fast_context.install()
        precise_timers()
        self._state = ProcessState(self.fast_path.guard)
        self._spare: Optional[Tuple[bytes, List[str], Any]] = None
        # The environ the last run was given, and os.environ's raw bytes after it was applied.
        self._environ: Optional[Tuple[Dict[str, str], Dict[bytes, bytes]]] = None

    def prepare_next(self, sent: SentRun) -> None:
        """Unpickle a fresh copy of ``sent``'s flow now, while idle, for a next
        run of the same flow (used once, and only if that run sends the same
        bytes and ``sys.path``). Optional; never raises."""
        self._spare = None
        try:
            flow = cloudpickle.loads(sent.flow)
        except Exception:  # noqa: BLE001 - the run itself will report it
            return
        self._spare = (sent.flow, list(sent.sys_path), flow)

    def _take_spare(self, sent: SentRun) -> Any:
        spare, self._spare = self._spare, None
        if spare is not None and spare[1] == sent.sys_path and (spare[0] is sent.flow or spare[0] == sent.flow):
            return spare[2]
        return None

    def run(self, sent: SentRun) -> RunOutcome:
        """Run one flow as the module docstring says; never raises for what
        the flow, its parameters or the working directory do.

        Returns:
            The run's record, and whether this process must retire.
        """
        try:
            result = self._execute(sent)
        finally:
            try:
                retire = self._state.reset()
            except Exception as err:  # noqa: BLE001 - a state we cannot read: start afresh
                retire = f"the process state could not be put back: {type(err).__name__}: {err}"
        return RunOutcome(result, retire)

    def _apply_environ(self, target: Dict[str, str]) -> None:
        """`apply_environ`, skipped when ``os.environ`` is still exactly what the
        last run was given (its raw bytes compared) and ``target`` is that too."""
        raw = getattr(os.environ, "_data", None)
        last = self._environ
        if raw is not None and last is not None and last[1] == raw and last[0] == target:
            return
        apply_environ(target)
        self._environ = (target, dict(raw)) if raw is not None else None

    def _execute(self, sent: SentRun) -> FlowRunResult:
        if sys.path != sent.sys_path:
            sys.path[:] = sent.sys_path
        try:
            flow = self._take_spare(sent)
            if flow is None:
                flow = cloudpickle.loads(sent.flow)
        except Exception as err:  # noqa: BLE001 - whatever unpickling the user's code raises
            return _failed(
                sent.flow_run_id,
                None,
                err,
                "the flow could not be loaded in the worker process (run it with "
                "LocalBackend(isolated=False), or define it in an importable module)",
            )
        try:
            parameters = cloudpickle.loads(sent.parameters)
        except Exception as err:  # noqa: BLE001
            return _failed(
                sent.flow_run_id, flow.name, err, "the parameters could not be loaded in the worker process"
            )
        self._apply_environ(sent.environ)
        try:
            os.chdir(sent.working_dir)
        except OSError as err:
            return _failed(sent.flow_run_id, flow.name, err, "working_dir cannot be entered")
        return execute_flow(flow, parameters, flow_run_id=sent.flow_run_id)

