"""The worker process of the isolated local backend: runs one flow run at a time.

A worker imports prefect once (the fork server preloads this module, so a fresh
worker is already past ``import prefect``), then serves run requests from its
pipe until the pipe closes, or until it has served ``max_runs`` runs. Each run
goes through `_run_path.RunPath` (the fast path for Prefect's context, the flow
unpickled afresh, env, working_dir and ``sys.path`` of the caller, the process
put back as it was after the run) and its `FlowRunResult` is sent back. Log
records of the run are sent to the parent as plain dicts, with run config env
values masked.

Messages are pickled tuples:

* parent -> worker: ``(RUN, flow_run_id, digest, flow_bytes | None, parameters_bytes,
  environ, working_dir, sys_path, log_level, secrets)``; a flow's bytes are sent
  only when this worker does not hold them (both sides keep the same LRU of
  digests)
* worker -> parent: ``(READY, pid, fast_path_off_reason | None)``,
  ``(LOG, flow_run_id | None, record_dict)``,
  ``(DONE, flow_run_id, FlowRunResult, retiring_reason | None)``: with a reason,
  the worker exits right after it and takes no further run
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
import traceback
from collections import OrderedDict
from multiprocessing.connection import Connection
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cloudpickle
import prefect  # noqa: F401  (imported here so that a preloaded worker is warm)

from lume_scheduling.domain import FlowRunResult, FlowRunState

from . import _descendants
from ._run_path import RunPath, SentRun

RUN = "run"
READY = "ready"
LOG = "log"
DONE = "done"

MASK = "**********"
# Env values shorter than this are not masked in log lines: masking "1" or "on"
# everywhere would garble every line and such values are not secrets.
MIN_SECRET_LENGTH = 4
FLOW_CACHE_SIZE = 32

# Attributes a forwarded log record keeps (the rest may not pickle).
_RECORD_FIELDS = (
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
    "relativeCreated",
    "thread",
    "threadName",
    "process",
    "processName",
    "flow_name",
    "task_name",
    "task_slug",
    "task_run_id",
)


def mask_secrets(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every occurrence of each secret replaced by a mask."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def secrets_of(env: Optional[Dict[str, str]]) -> Tuple[str, ...]:
    """The env values to mask in log lines, longest first (so that a value that
    contains another is masked whole)."""
    values = {value for value in (env or {}).values() if len(value) >= MIN_SECRET_LENGTH}
    return tuple(sorted(values, key=len, reverse=True))


class _Channel:
    """The worker's end of its pipe; sends are serialised because a task's own
    threads may log while the main thread reports a result."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, message: Tuple[Any, ...]) -> None:
        data = cloudpickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self.lock:
            self.conn.send_bytes(data)


class ForwardingHandler(logging.Handler):
    """Sends each log record to the parent as a dict tagged with the current run."""

    def __init__(self, channel: _Channel) -> None:
        super().__init__(logging.NOTSET)
        self.channel = channel
        self.flow_run_id: Optional[str] = None
        self.secrets: Tuple[str, ...] = ()
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {name: getattr(record, name) for name in _RECORD_FIELDS if hasattr(record, name)}
            # Format here: args may not pickle, and secrets must go before sending.
            fields["msg"] = mask_secrets(record.getMessage(), self.secrets)
            fields["args"] = None
            if record.exc_info:
                fields["exc_text"] = mask_secrets(
                    self._formatter.formatException(record.exc_info), self.secrets
                )
            elif record.exc_text:
                fields["exc_text"] = mask_secrets(record.exc_text, self.secrets)
            if record.stack_info:
                fields["stack_info"] = mask_secrets(record.stack_info, self.secrets)
            self.channel.send((LOG, self.flow_run_id, fields))
        except (BrokenPipeError, EOFError, OSError):
            pass  # the parent is gone; the watchdog ends this process
        except Exception:  # noqa: BLE001 - a log line must never fail a run
            self.handleError(record)


def _watch_parent(alive: Connection) -> None:
    """End this process when the parent goes away, even mid-run (a hung flow
    would otherwise outlive a parent killed with SIGKILL), and what the run
    started with it."""
    try:
        alive.recv_bytes()
    except (EOFError, OSError):
        pass
    _descendants.kill_descendants(os.getpid())
    os._exit(0)


def _own_signals_and_descendants() -> None:
    """Once in its own process group: adopt orphaned descendants (so none
    escapes a kill), and take SIGINT again. The backend starts workers with
    SIGINT blocked, so that a Ctrl-C sent to the caller's process group while a
    worker (or the fork server) starts cannot interrupt it with a traceback;
    one that arrived meanwhile is discarded (ignoring a pending signal drops it)."""
    _descendants.become_subreaper()
    if hasattr(signal, "pthread_sigmask"):
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, previous)


def _configure_logging(channel: _Channel, forked_from_caller: bool = False) -> ForwardingHandler:
    handler = ForwardingHandler(channel)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    # prefect's own stdout and cloud handlers: the parent's logging decides output.
    loggers = [logging.getLogger("prefect")]
    if forked_from_caller:
        # And whatever handlers the caller had set up (the command line's own
        # stderr handler): records go to the parent, which has them.
        loggers += [item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    for logger in loggers:
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
    loggers[0].propagate = True
    root.addHandler(handler)
    return handler


def _set_level(level: int) -> None:
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        if logger.level != level:
            logger.setLevel(level)


class Worker:
    """State of one worker process: its channel, log handler, run path and the
    bytes of the flows it was sent (by digest).

    Args:
        conn: The worker's end of its pipe.
        max_runs: Runs to serve before exiting; None: as many as are sent.
        forked_from_caller: This process is a fork of the caller itself (not of
            the fork server): drop the log handlers it inherited.
    """

    def __init__(self, conn: Connection, max_runs: Optional[int] = None, forked_from_caller: bool = False) -> None:
        self.channel = _Channel(conn)
        self.handler = _configure_logging(self.channel, forked_from_caller)
        self.path = RunPath()
        self.flows: "OrderedDict[bytes, bytes]" = OrderedDict()
        self.max_runs = max_runs
        self.runs = 0

    def serve(self) -> None:
        try:
            self.channel.send((READY, os.getpid(), self.path.fast_path.reason))
        except (BrokenPipeError, EOFError, OSError):
            return  # killed (cancel, time-out, close) before it was ready: nothing to report
        while True:
            try:
                data = self.channel.conn.recv_bytes()
            except (EOFError, OSError):
                return
            message = pickle.loads(data)
            if message[0] == RUN and self.run(*message[1:]):
                return

    def _flow(self, digest: bytes, flow_bytes: Optional[bytes]) -> Optional[bytes]:
        # The parent mirrors this cache and sends a flow's bytes only when it
        # is not here: both sides apply the same LRU steps in the same order.
        if flow_bytes is not None:
            self.flows[digest] = flow_bytes
            while len(self.flows) > FLOW_CACHE_SIZE:
                self.flows.popitem(last=False)
        self.flows.move_to_end(digest)
        return self.flows[digest]

    def run(
        self,
        flow_run_id: str,
        digest: bytes,
        flow_bytes: Optional[bytes],
        parameters_bytes: bytes,
        environ: Dict[str, str],
        working_dir: str,
        sys_path: List[str],
        log_level: int,
        secrets: Tuple[str, ...],
    ) -> bool:
        """Run one flow and report it.

        Returns:
            True if this worker must stop now (it told the parent so).
        """
        self.handler.flow_run_id = flow_run_id
        self.handler.secrets = secrets
        _set_level(log_level)
        sent = SentRun(flow_run_id, self._flow(digest, flow_bytes), parameters_bytes, environ, working_dir, sys_path)
        try:
            outcome = self.path.run(sent)
            _descendants.end_leftovers()  # nothing the run started outlives it
        finally:
            self.handler.flow_run_id = None
        self.runs += 1
        retire = outcome.retire
        if retire is None and self.max_runs is not None and self.runs >= self.max_runs:
            retire = f"it has served max_runs_per_worker={self.max_runs} runs"
        self._report(outcome.result, retire)
        if retire is None:
            # While the parent reads the result and sends the next run.
            self.path.prepare_next(sent)
        return retire is not None

    def _report(self, result: FlowRunResult, retire: Optional[str]) -> None:
        message = (DONE, result.flow_run_id, result, retire)
        try:
            try:
                # Plain pickle first: five times cheaper, and enough for most values.
                data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - a value only cloudpickle can take
                data = cloudpickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # noqa: BLE001 - a task value that cannot be pickled
            unsendable = _unsendable_tasks(result)
            result = FlowRunResult(
                flow_run_id=result.flow_run_id,
                flow_id=None,
                state=FlowRunState.FAILED,
                message=(
                    f"the result of task(s) {', '.join(unsendable) or '?'} cannot be sent back "
                    f"from the worker process: {type(err).__name__}: {err} (return picklable "
                    "values, or run it with LocalBackend(isolated=False))"
                ),
                flow_name=result.flow_name,
                exception_type=type(err).__name__,
            )
            data = cloudpickle.dumps((DONE, result.flow_run_id, result, retire))
        try:
            with self.channel.lock:
                self.channel.conn.send_bytes(data)
        except (BrokenPipeError, EOFError, OSError):
            pass  # the parent is gone or closed our pipe; the next read ends this worker


def _unsendable_tasks(result: FlowRunResult) -> List[str]:
    names = []
    for run in result.task_runs:
        try:
            cloudpickle.dumps(run.value)
        except Exception:  # noqa: BLE001
            names.append(repr(run.key))
    return names


def main(
    conn: Connection, alive: Connection, max_runs: Optional[int] = None, inherited_fds: Sequence[int] = ()
) -> None:
    """Entry point of a worker process (the target of ``multiprocessing.Process``).

    Args:
        conn: The worker's end of its duplex pipe to the parent.
        alive: Read end of the parent's liveness pipe: EOF means the parent died.
        max_runs: Runs to serve before exiting; None: no limit.
        inherited_fds: The parent's own pipe ends this process inherited (a
            worker forked from the caller itself). They are pointed at
            /dev/null first: the pipes lose this holder (the parent's EOF
            signals work), and the numbers stay taken (copies of the parent's
            objects here still think they own them).
    """
    if inherited_fds:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in inherited_fds:
            os.dup2(null, fd)
        os.close(null)
    try:
        # Own process group: cancel can kill the flow's own subprocesses too, and
        # Ctrl+C in a terminal reaches the caller only (it then closes the backend).
        os.setpgid(0, 0)
    except OSError:
        pass
    _own_signals_and_descendants()
    threading.Thread(target=_watch_parent, args=(alive,), name="lume-parent-watch", daemon=True).start()
    try:
        Worker(conn, max_runs, forked_from_caller=bool(inherited_fds)).serve()
    except Exception:  # noqa: BLE001 - report the bug, then die: the parent marks the run crashed
        traceback.print_exc()
        os._exit(70)
