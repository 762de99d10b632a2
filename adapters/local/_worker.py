"""The worker process of the isolated local backend: runs one flow run at a time.

A worker imports prefect once (the fork server preloads this module, so a fresh
worker is already past ``import prefect``), then serves run requests from its
pipe until the pipe closes. Per run it takes the caller's environment, run
config env, working directory and ``sys.path``; runs the flow with
`execute_flow`; and sends back the `FlowRunResult`. Log records of the run are
sent to the parent as plain dicts, with run config env values masked.

Messages are ``cloudpickle`` bytes of tuples:

* parent -> worker: ``(RUN, flow_run_id, token, flow_bytes | None, parameters_bytes,
  environ, working_dir, sys_path, log_level, secrets)``
* worker -> parent: ``(READY, pid)``, ``(LOG, flow_run_id | None, record_dict)``,
  ``(DONE, flow_run_id, FlowRunResult)``
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
import traceback
from collections import OrderedDict
from multiprocessing.connection import Connection
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cloudpickle
import prefect  # noqa: F401  (imported here so that a preloaded worker is warm)

from lume_scheduling.adapters.prefect_flows import execute_flow
from lume_scheduling.domain import FlowRunResult, FlowRunState

from . import _descendants

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


def _configure_logging(channel: _Channel) -> ForwardingHandler:
    handler = ForwardingHandler(channel)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    # prefect's own stdout and cloud handlers: the parent's logging decides output.
    prefect_logger = logging.getLogger("prefect")
    for existing in list(prefect_logger.handlers):
        prefect_logger.removeHandler(existing)
    prefect_logger.propagate = True
    root.addHandler(handler)
    return handler


def _set_level(level: int) -> None:
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        if logger.level != level:
            logger.setLevel(level)


def _apply_environ(target: Dict[str, str]) -> None:
    """Make os.environ equal to ``target`` with as few putenv calls as possible."""
    current = os.environ
    for name in [name for name in current if name not in target]:
        del current[name]
    for name, value in target.items():
        if current.get(name) != value:
            current[name] = value


def _failed(flow_run_id: str, flow_name: Optional[str], err: BaseException, what: str) -> FlowRunResult:
    return FlowRunResult(
        flow_run_id=flow_run_id,
        flow_id=None,
        state=FlowRunState.FAILED,
        message=f"{what}: {err}",
        flow_name=flow_name,
        exception_type=type(err).__name__,
    )


class Worker:
    """State of one worker process: its channel, log handler and flow cache."""

    def __init__(self, conn: Connection) -> None:
        self.channel = _Channel(conn)
        self.handler = _configure_logging(self.channel)
        self.flows: "OrderedDict[int, Any]" = OrderedDict()

    def serve(self) -> None:
        try:
            self.channel.send((READY, os.getpid()))
        except (BrokenPipeError, EOFError, OSError):
            return  # killed (cancel, time-out, close) before it was ready: nothing to report
        while True:
            try:
                data = self.channel.conn.recv_bytes()
            except (EOFError, OSError):
                return
            message = pickle.loads(data)
            if message[0] == RUN:
                self.run(*message[1:])

    def _flow(self, token: int, flow_bytes: Optional[bytes]) -> Any:
        # The parent mirrors this cache and sends a flow's bytes only when it
        # is not here: both sides apply the same LRU steps in the same order.
        if flow_bytes is not None:
            self.flows[token] = cloudpickle.loads(flow_bytes)
            while len(self.flows) > FLOW_CACHE_SIZE:
                self.flows.popitem(last=False)
        self.flows.move_to_end(token)
        return self.flows[token]

    def run(
        self,
        flow_run_id: str,
        token: int,
        flow_bytes: Optional[bytes],
        parameters_bytes: bytes,
        environ: Dict[str, str],
        working_dir: str,
        sys_path: List[str],
        log_level: int,
        secrets: Tuple[str, ...],
    ) -> None:
        self.handler.flow_run_id = flow_run_id
        self.handler.secrets = secrets
        _set_level(log_level)
        flow = None
        try:
            if sys.path != sys_path:
                sys.path[:] = sys_path
            try:
                flow = self._flow(token, flow_bytes)
            except Exception as err:
                self.flows.pop(token, None)
                result = _failed(
                    flow_run_id,
                    None,
                    err,
                    "the flow could not be loaded in the worker process (run it with "
                    "LocalBackend(isolated=False), or define it in an importable module)",
                )
                return self._report(result)
            try:
                parameters = cloudpickle.loads(parameters_bytes)
            except Exception as err:
                return self._report(_failed(
                    flow_run_id, flow.name, err, "the parameters could not be loaded in the worker process"
                ))
            _apply_environ(environ)
            try:
                os.chdir(working_dir)
            except OSError as err:
                return self._report(_failed(flow_run_id, flow.name, err, "working_dir cannot be entered"))
            result = execute_flow(flow, parameters, flow_run_id=flow_run_id)
            _descendants.end_leftovers()  # nothing the run started outlives it
            self._report(result)
        finally:
            self.handler.flow_run_id = None

    def _report(self, result: FlowRunResult) -> None:
        try:
            data = cloudpickle.dumps((DONE, result.flow_run_id, result), protocol=pickle.HIGHEST_PROTOCOL)
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
            data = cloudpickle.dumps((DONE, result.flow_run_id, result))
        with self.channel.lock:
            self.channel.conn.send_bytes(data)


def _unsendable_tasks(result: FlowRunResult) -> List[str]:
    names = []
    for run in result.task_runs:
        try:
            cloudpickle.dumps(run.value)
        except Exception:  # noqa: BLE001
            names.append(repr(run.key))
    return names


def main(conn: Connection, alive: Connection) -> None:
    """Entry point of a worker process (the target of ``multiprocessing.Process``).

    Args:
        conn: The worker's end of its duplex pipe to the parent.
        alive: Read end of the parent's liveness pipe: EOF means the parent died.
    """
    try:
        # Own process group: cancel can kill the flow's own subprocesses too, and
        # Ctrl+C in a terminal reaches the caller only (it then closes the backend).
        os.setpgid(0, 0)
    except OSError:
        pass
    _own_signals_and_descendants()
    threading.Thread(target=_watch_parent, args=(alive,), name="lume-parent-watch", daemon=True).start()
    try:
        Worker(conn).serve()
    except Exception:  # noqa: BLE001 - report the bug, then die: the parent marks the run crashed
        traceback.print_exc()
        os._exit(70)
