"""Reference runs: a flow run by plain prefect, ``flow.run()``, in a fresh process.

A backend that runs flows its own way (warm workers, a fast path for Prefect's
context) proves it keeps Prefect's semantics by running the same flows both
ways and comparing what came out; `reference_run` gives the Prefect side. The
flow is pickled as the local backend pickles it (so flows of test modules
work), sent to a process forked from multiprocessing's fork server (which has
imported prefect but changes nothing in it), run there with
``flow.run(parameters, run_on_schedule=False, flow_run_id=...)`` through
`execute_flow`, and its `FlowRunResult` comes back with every log record the
run emitted at ``log_level`` or above, in order.

The process starts clean: its ``prefect.config`` and ``prefect.context`` are
as ``import prefect`` made them, whatever earlier reference runs did.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
from dataclasses import dataclass, field
from multiprocessing import forkserver
from typing import Any, List, Mapping, Optional, Tuple

import cloudpickle

from lume_scheduling.domain import FlowRunResult

# (logger name, level name, message, task slug or None) of one log record.
LogLine = Tuple[str, str, str, Optional[str]]


@dataclass
class ReferenceRun:
    """What plain prefect did with a flow.

    Attributes:
        result: The run's record, read from Prefect's final state.
        logs: Every record at or above the level asked for, in order.
    """

    result: FlowRunResult
    logs: List[LogLine] = field(default_factory=list)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.lines: List[LogLine] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(
            (record.name, record.levelname, record.getMessage(), getattr(record, "task_slug", None))
        )


def _child(conn: Any, flow_bytes: bytes, parameters: bytes, flow_run_id: str, log_level: int,
           sys_path: List[str], working_dir: str) -> None:
    from lume_scheduling.adapters.prefect_flows import execute_flow

    sys.path[:] = sys_path
    os.chdir(working_dir)
    collector = _Collector()
    root = logging.getLogger()
    root.handlers[:] = [collector]
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.handlers[:] = []  # prefect's own stdout handler
    prefect_logger.propagate = True
    for logger in (root, prefect_logger):
        logger.setLevel(log_level)
    flow = cloudpickle.loads(flow_bytes)
    result = execute_flow(flow, cloudpickle.loads(parameters), flow_run_id=flow_run_id)
    conn.send_bytes(cloudpickle.dumps((result, collector.lines)))
    conn.close()


def reference_run(
    flow: Any,
    parameters: Optional[Mapping[str, Any]] = None,
    *,
    flow_run_id: str,
    log_level: int = logging.DEBUG,
    working_dir: Optional[str] = None,
    timeout: float = 120.0,
) -> ReferenceRun:
    """Run ``flow`` with plain prefect in a fresh process; see the module docstring.

    Args:
        flow: A Prefect 1 flow.
        parameters: Its parameters by name.
        flow_run_id: The id the run gets (Prefect's ``flow_run_id`` in context).
        log_level: Records below this level are not kept.
        working_dir: Where it runs; None: this process's directory.
        timeout: Seconds to wait for it.

    Returns:
        Its record and log lines.

    Raises:
        RuntimeError: The process died or did not answer within ``timeout``.
        TypeError: The flow or a parameter cannot be pickled.
    """
    from lume_scheduling.adapters.local._payload import dumps_flow, dumps_parameters

    search_path = [os.getcwd() if entry == "" else entry for entry in sys.path]
    flow_bytes = dumps_flow(flow, search_path)
    parameter_bytes = dumps_parameters(dict(parameters or {}), search_path)
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        preload = list(getattr(forkserver._forkserver, "_preload_modules", None) or [])
        if "prefect" not in preload and not any(name.startswith("lume_scheduling") for name in preload):
            ctx.set_forkserver_preload(preload + ["prefect"])
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child,
        args=(child, flow_bytes, parameter_bytes, flow_run_id, log_level, search_path,
              working_dir or os.getcwd()),
        name="lume-reference-run",
    )
    process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"the reference run of {flow.name!r} did not end within {timeout} s")
        try:
            result, lines = pickle.loads(parent.recv_bytes())
        except EOFError:
            raise RuntimeError(
                f"the reference run of {flow.name!r} died (exit code {process.exitcode})"
            ) from None
    finally:
        parent.close()
        if process.exitcode is None:
            process.join(5)
        if process.exitcode is None:
            process.kill()
            process.join()
        process.close()
    return ReferenceRun(result, lines)
