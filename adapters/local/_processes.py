"""Isolated execution: a bounded pool of warm worker processes.

One manager thread per backend owns the workers. It starts them on demand (up
to ``max_workers``) from a multiprocessing *context* (never the global start
method), hands each idle worker the next scheduled run, reads results and log
records from the workers' pipes, and notices dead workers through their
sentinels. A run whose worker dies ends CRASHED; cancel and time-outs kill the
worker's process group; a replacement is started when there is work. A worker
that says it retires (``max_runs_per_worker``, or a state it could not put
back) takes no further run and is replaced. With ``fork_first_worker`` the
first worker is forked from the caller's own thread before the manager thread
exists.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from multiprocessing import connection, forkserver, resource_tracker
from typing import Any, Deque, Dict, List, Optional, Tuple

from lume_scheduling.domain import BackendUnavailableError, FlowRunState, LocalRunConfig

from . import _descendants, _worker
from ._payload import FlowPayload, dumps_parameters, flow_payload
from ._runs import LocalRun, RunTable

WORKER_MODULE = _worker.__name__
START_METHODS = ("forkserver", "spawn")
# What a descriptor in the manager's poll set is.
_WAKE, _CONN, _SENTINEL = "wake", "conn", "sentinel"
_JOIN_SECONDS = 2.0


@dataclass
class Job:
    """What a worker needs for one run, prepared in the caller's thread."""

    payload: FlowPayload
    parameters: bytes = field(repr=False)
    # Environment values are often secrets: never in a repr.
    environ: Dict[str, str] = field(repr=False)
    working_dir: str = ""
    sys_path: List[str] = field(default_factory=list, repr=False)
    log_level: int = 0
    secrets: Tuple[str, ...] = field(default=(), repr=False)


@dataclass(eq=False)
class WorkerHandle:
    """The parent's view of one worker process."""

    process: Any
    conn: Any
    run: Optional[LocalRun] = None
    dead: bool = False
    ready: bool = False
    # Told us it takes no further run (max_runs_per_worker, or a state it could not put back).
    retiring: bool = False
    cache: "OrderedDict[bytes, None]" = field(default_factory=OrderedDict)
    _poller: Any = field(default=None, repr=False)

    def readable(self) -> bool:
        """Whether a message (or EOF) waits in the pipe. ``conn.poll()`` would
        build a selector for every call; this keeps one poll object."""
        poller = self._poller
        if poller is None:
            if not hasattr(select, "poll"):  # pragma: no cover - a platform without poll()
                return bool(self.conn.poll())
            poller = self._poller = select.poll()
            poller.register(self.conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    @property
    def idle(self) -> bool:
        """Alive, not retiring, and running nothing."""
        return self.run is None and not self.dead and not self.retiring

    def message_for(self, run: LocalRun, job: Job) -> Tuple[bytes, bool]:
        """The run request, with the flow's bytes only if this worker lacks them
        (mirrors the worker's LRU cache step by step), and whether they are in it."""
        digest = job.payload.digest
        if digest in self.cache:
            flow_bytes = None
        else:
            flow_bytes = job.payload.data
            self.cache[digest] = None
            while len(self.cache) > _worker.FLOW_CACHE_SIZE:
                self.cache.popitem(last=False)
        self.cache.move_to_end(digest)
        return pickle.dumps(
            (
                _worker.RUN,
                run.flow_run_id,
                digest,
                flow_bytes,
                job.parameters,
                job.environ,
                job.working_dir,
                job.sys_path,
                job.log_level,
                job.secrets,
            ),
            protocol=pickle.HIGHEST_PROTOCOL,
        ), flow_bytes is not None

    def kill(self) -> None:
        """SIGKILL the worker, every process it started (whatever their session;
        see `_descendants`) and its process group."""
        pid = self.process.pid
        if pid is None or self.process.exitcode is not None:
            return
        _descendants.kill_tree(pid)
        try:
            os.killpg(pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError, OSError):
            pass  # it has not made its own group yet
        try:
            self.process.kill()
        except (ProcessLookupError, OSError, ValueError):
            pass


def _death_message(exitcode: Optional[int]) -> str:
    if exitcode is None:
        return "the worker process running the flow died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the worker process running the flow died (killed by {name})"
    return f"the worker process running the flow died (exit code {exitcode})"


def _block_sigint_in_this_thread() -> None:
    """Block SIGINT in the manager thread, which starts the worker processes (and
    the fork server): they inherit the mask, so a Ctrl-C sent to the caller's
    process group while they start cannot interrupt them with a traceback (the
    worker takes SIGINT back once in its own group). Python handles signals in
    the main thread only, so this thread loses nothing.

    multiprocessing's resource tracker unblocks SIGINT in the thread that
    starts it (after starting it with the signal blocked), so it is started
    first; later calls find it running and leave the mask alone."""
    if hasattr(signal, "pthread_sigmask"):
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _kill_group_left_by(pid: Optional[int]) -> None:
    """A worker that died on its own could not clean up: kill what is left of
    its process group (the processes its runs started there)."""
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass  # nothing left


class ProcessRuntime:
    """Runs flow runs in worker processes; see the module docstring.

    Args:
        runs: The backend's run table.
        max_workers: Most runs executing at once (a worker that has retired may
            still be exiting while its replacement starts).
        start_method: ``"forkserver"`` or ``"spawn"``.
        logger: Where the workers' log records are re-emitted.
        max_runs_per_worker: Runs a worker serves before it exits; None: no limit.
        fork_first_worker: Fork the first worker from this process when it has
            no other thread at the first submit (see `LocalBackend`).
    """

    def __init__(
        self,
        runs: RunTable,
        max_workers: int,
        start_method: str,
        logger: logging.Logger,
        max_runs_per_worker: Optional[int] = None,
        fork_first_worker: bool = False,
    ) -> None:
        self.runs = runs
        self.max_workers = max_workers
        self.start_method = start_method
        self.logger = logger
        self.max_runs_per_worker = max_runs_per_worker
        self.fork_first_worker = fork_first_worker
        self._ctx = multiprocessing.get_context(start_method)
        self._pending: Deque[LocalRun] = deque()
        self._workers: List[WorkerHandle] = []
        self._thread: Optional[threading.Thread] = None
        self._closing = False
        self._woken = False
        self._wake_r: Any = None
        self._wake_w: Any = None
        self._alive_r: Any = None
        self._alive_w: Any = None
        self.workers_started = 0
        self.flows_sent = 0
        self._fast_path_warned = False
        self._environ_cache: Optional[Tuple[Dict[bytes, bytes], Dict[str, str]]] = None
        # The manager's poll set, rebuilt only when the workers change (see `_poll_set`).
        self._workers_version = 0
        self._poll_version = -1
        self._poller: Any = None
        self._watched: Dict[int, Tuple[str, Optional[WorkerHandle]]] = {}
        # Workers to start before any run asks for them (`prestart`).
        self._prestart = 0

    # ---------------------------------------------------------------- callers

    def prepare(self, flow: Any, parameters: Dict[str, Any], config: LocalRunConfig) -> Job:
        """Everything a worker needs, built in the caller's thread so that an
        unpicklable flow fails the call itself.

        Raises:
            UnsendableFlowError: The flow or a parameter cannot be pickled.
        """
        cwd = os.getcwd()
        sys_path = [cwd if entry == "" else entry for entry in sys.path]
        payload = flow_payload(flow, sys_path)
        environ = self._environ()
        if config.env:
            environ = dict(environ)
            environ.update(config.env)
        return Job(
            payload=payload,
            parameters=dumps_parameters(parameters, sys_path),
            environ=environ,
            working_dir=config.working_dir or cwd,
            sys_path=sys_path,
            log_level=self.logger.getEffectiveLevel(),
            secrets=_worker.secrets_of(config.env),
        )

    def _environ(self) -> Dict[str, str]:
        """The caller's environment now (a shared, read-only snapshot).

        Decoding os.environ costs a few hundred microseconds per run; its raw
        bytes mapping compares in microseconds, so the snapshot is reused while
        nothing changed.
        """
        raw = getattr(os.environ, "_data", None)
        cached = self._environ_cache
        if raw is not None and cached is not None and cached[0] == raw:
            return cached[1]
        snapshot = dict(os.environ)
        if raw is not None:
            self._environ_cache = (dict(raw), snapshot)
        return snapshot

    def start(self, run: LocalRun) -> None:
        """Queue a run; a worker picks it up as soon as one is free.

        Raises:
            BackendUnavailableError: The backend was closed.
        """
        assignments: List[Tuple[WorkerHandle, LocalRun, Job]] = []
        with self.runs.lock:
            if self._closing:
                raise BackendUnavailableError("local backend", "it was closed")
            if self._thread is None:
                self._open()
            self._pending.append(run)
            if len(self._pending) == 1 and any(worker.idle for worker in self._workers):
                # An idle worker: hand it the run from this thread, saving the
                # hop through the manager thread (it still reads the result).
                assignments, _ = self._assign_locked()
            else:
                self._wake_locked()
        for worker, assigned, job in assignments:
            self._send(worker, assigned, job)

    def prestart(self) -> None:
        """Start every worker now (in the manager thread), rather than when the
        first runs ask for them; a no-op once closed.

        Raises:
            BackendUnavailableError: The backend was closed.
        """
        with self.runs.lock:
            if self._closing:
                raise BackendUnavailableError("local backend", "it was closed")
            if self._thread is None:
                self._open()
            self._prestart = self.max_workers
            self._wake_locked()

    def cancel(self, run: LocalRun, message: str) -> bool:
        """End a run as CANCELLED; kill its worker if it is running."""
        with self.runs.lock:
            if run.state.is_final:
                return False
            worker = run.worker
            self.runs.end(run, FlowRunState.CANCELLED, message)
            try:
                self._pending.remove(run)
            except ValueError:
                pass
            if isinstance(worker, WorkerHandle) and not worker.dead:
                worker.kill()
            self._wake_locked()
        return True

    def close(self) -> None:
        """Cancel what has not ended, stop the manager thread and every worker."""
        with self.runs.lock:
            if self._closing:
                thread = None
            else:
                self._closing = True
                thread = self._thread
            for run in self.runs.unfinished():
                self.runs.end(run, FlowRunState.CANCELLED, "the backend was closed before the run ended")
            self._pending.clear()
            if thread is not None:
                self._wake_locked()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def live_workers(self) -> int:
        """Number of worker processes alive now."""
        return sum(1 for worker in list(self._workers) if not worker.dead)

    # ---------------------------------------------------------------- manager

    def _open(self) -> None:
        if self.start_method == "forkserver":
            # The fork server imports the worker module (and so prefect) once;
            # each worker forked from it starts warm. Keep preloads others set.
            preload = list(getattr(forkserver._forkserver, "_preload_modules", None) or [])
            if WORKER_MODULE not in preload:
                self._ctx.set_forkserver_preload(preload + [WORKER_MODULE])
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._alive_r, self._alive_w = self._ctx.Pipe(duplex=False)
        if (
            self.fork_first_worker
            and threading.active_count() == 1
            and "fork" in multiprocessing.get_all_start_methods()
        ):
            # No other thread yet (the manager starts below): a fork of this
            # process, which has imported prefect already, is a warm worker
            # at once, without waiting for the fork server's own import.
            # SIGINT blocked across the fork, as in the manager thread: a Ctrl-C
            # to the process group must not reach the child inside os.fork's
            # after-fork hooks (a KeyboardInterrupt there is printed, not raised).
            blocked = hasattr(signal, "pthread_sigmask")
            if blocked:
                previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                self._start_workers(1, multiprocessing.get_context("fork"))
            finally:
                if blocked:
                    signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        self._thread = threading.Thread(target=self._manage, name="lume-local-manager", daemon=True)
        self._thread.start()

    def _wake_locked(self) -> None:
        if not self._woken and self._wake_w is not None:
            self._woken = True
            try:
                self._wake_w.send_bytes(b"!")
            except OSError:
                pass  # the manager has stopped

    def _manage(self) -> None:
        _block_sigint_in_this_thread()
        try:
            while True:
                with self.runs.lock:
                    if self._closing:
                        break
                    assignments, starts = self._assign_locked()
                for worker, run, job in assignments:
                    self._send(worker, run, job)
                if starts:
                    self._start_workers(starts)
                    continue
                self._wait_and_handle()
        except Exception:  # noqa: BLE001 - never die silently: end the runs, say why
            self.logger.exception("local backend manager thread failed")
            with self.runs.lock:
                self._closing = True
                for run in self.runs.unfinished():
                    self.runs.end(run, FlowRunState.CRASHED, "the local backend's manager thread failed")
        finally:
            self._shutdown_workers()

    def _assign_locked(self) -> Tuple[List[Tuple[WorkerHandle, LocalRun, Job]], int]:
        assignments = []
        for worker in self._workers:
            if not self._pending:
                break
            if not worker.idle:
                continue
            run = self._pending.popleft()
            job = run.job
            run.state = FlowRunState.RUNNING
            run.worker = worker
            run.job = None
            worker.run = run
            assignments.append((worker, run, job))
        live = sum(1 for worker in self._workers if not worker.dead and not worker.retiring)
        wanted = max(len(self._pending), self._prestart - live)
        self._prestart = 0
        starts = min(wanted, self.max_workers - live)
        return assignments, max(starts, 0)

    def _send(self, worker: WorkerHandle, run: LocalRun, job: Job) -> None:
        message, with_flow = worker.message_for(run, job)
        if with_flow:
            self.flows_sent += 1
        try:
            worker.conn.send_bytes(message)
        except (OSError, EOFError, ValueError):
            pass  # the worker died (or was killed by cancel); its sentinel tells

    def _start_workers(self, count: int, ctx: Any = None) -> None:
        ctx = ctx or self._ctx
        for _ in range(count):
            parent_conn, child_conn = ctx.Pipe(duplex=True)
            inherited: List[int] = []
            if ctx.get_start_method() == "fork":
                # A forked child holds copies of this process's ends of the
                # backend's pipes: it must close them, or it would never read
                # EOF (its own pipe, the liveness pipe).
                inherited = [parent_conn.fileno(), self._alive_w.fileno(), self._wake_r.fileno(), self._wake_w.fileno()]
                inherited += [worker.conn.fileno() for worker in self._workers if not worker.dead]
            process = ctx.Process(
                target=_worker.main,
                args=(child_conn, self._alive_r, self.max_runs_per_worker, inherited),
                name=f"lume-local-worker-{self.workers_started + 1}",
                daemon=False,  # tasks may start their own processes
            )
            try:
                process.start()
            except Exception as err:  # noqa: BLE001 - no process: fail what waits
                parent_conn.close()
                child_conn.close()
                self._fail_pending(f"a worker process could not be started: {type(err).__name__}: {err}")
                return
            finally:
                if process.pid is not None:
                    child_conn.close()
            self.workers_started += 1
            with self.runs.lock:
                self._workers.append(WorkerHandle(process, parent_conn))
                self._workers_version += 1

    def _fail_pending(self, message: str) -> None:
        with self.runs.lock:
            if any(not worker.dead for worker in self._workers):
                return  # the live workers will take the queued runs
            while self._pending:
                self.runs.end(self._pending.popleft(), FlowRunState.CRASHED, message)

    def _poll_set(self) -> Tuple[Any, Dict[int, Tuple[str, Optional[WorkerHandle]]]]:
        """The manager's poll object over the wake pipe and every worker's pipe
        and sentinel, and what each descriptor is. Kept from one wait to the
        next and made afresh only when the workers changed (the manager
        reaps, and so closes descriptors, only between waits): building it for
        every wait was most of the manager's work per run."""
        if self._poller is None or self._poll_version != self._workers_version:
            with self.runs.lock:
                version = self._workers_version
                workers = list(self._workers)
            poller = select.poll()
            watched: Dict[int, Tuple[str, Optional[WorkerHandle]]] = {self._wake_r.fileno(): (_WAKE, None)}
            for worker in workers:
                watched[worker.conn.fileno()] = (_CONN, worker)
                watched[worker.process.sentinel] = (_SENTINEL, worker)
            for fd in watched:
                poller.register(fd, select.POLLIN)
            self._poller, self._watched, self._poll_version = poller, watched, version
        return self._poller, self._watched

    def _wait_and_handle(self) -> None:
        if not hasattr(select, "poll"):  # pragma: no cover - a platform without poll()
            self._wait_and_handle_portably()
            return
        poller, watched = self._poll_set()
        ready = [watched[fd] for fd, _ in poller.poll() if fd in watched]
        for kind, worker in ready:
            if kind == _WAKE:
                self._drain_wake()
            elif kind == _CONN and worker is not None:
                self._read(worker, ready=True)
        for kind, worker in ready:
            if kind == _SENTINEL and worker is not None:
                self._reap(worker)

    def _wait_and_handle_portably(self) -> None:
        workers = list(self._workers)
        by_conn = {worker.conn: worker for worker in workers}
        by_sentinel = {worker.process.sentinel: worker for worker in workers}
        ready = connection.wait([self._wake_r, *by_conn, *by_sentinel])
        for item in ready:
            if item is self._wake_r:
                self._drain_wake()
            elif item in by_conn:
                self._read(by_conn[item])
        for item in ready:
            if isinstance(item, int) and item in by_sentinel:
                self._reap(by_sentinel[item])

    def _drain_wake(self) -> None:
        with self.runs.lock:
            self._woken = False
            while self._wake_r.poll():
                self._wake_r.recv_bytes()

    def _read(self, worker: WorkerHandle, ready: bool = False) -> None:
        """Handle every message waiting in the worker's pipe (``ready``: the
        manager's poll has just said one is there)."""
        while not worker.dead:
            try:
                if not ready and not worker.readable():
                    return
                ready = False
                data = worker.conn.recv_bytes()
            except (EOFError, OSError):
                return  # the sentinel follows
            self._handle(worker, pickle.loads(data))

    def _handle(self, worker: WorkerHandle, message: Tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == _worker.LOG:
            self._emit(message[1], message[2])
        elif kind == _worker.DONE:
            _, flow_run_id, result, retiring = message
            with self.runs.lock:
                run = worker.run
                if run is not None and run.flow_run_id == flow_run_id:
                    worker.run = None
                if retiring is not None:
                    worker.retiring = True  # it exits now; its sentinel follows
            if retiring is not None:
                self.logger.debug("a worker process retires: %s", retiring)
            if run is not None and run.flow_run_id == flow_run_id:
                self.runs.finish(run, result)
        elif kind == _worker.READY:
            worker.ready = True
            reason = message[2]
            if reason is not None and not self._fast_path_warned:
                self._fast_path_warned = True
                self.logger.warning(
                    "the fast path for Prefect's context is off in worker processes: %s; "
                    "flows run as fast as a plain flow.run()",
                    reason,
                )

    def _emit(self, flow_run_id: Optional[str], fields: Dict[str, Any]) -> None:
        record = logging.makeLogRecord(fields)
        record.flow_run_id = flow_run_id
        if self.logger.isEnabledFor(record.levelno):
            self.logger.handle(record)

    def _reap(self, worker: WorkerHandle) -> None:
        self._read(worker)  # a result sent just before dying still counts
        with self.runs.lock:
            worker.dead = True
            run = worker.run
            worker.run = None
            if worker in self._workers:
                self._workers.remove(worker)
                self._workers_version += 1
        # Before it is reaped: until then its pid (the group's id) cannot be reused.
        _kill_group_left_by(worker.process.pid)
        worker.process.join()
        exitcode = worker.process.exitcode
        worker.conn.close()
        worker.process.close()
        if run is not None:
            message = _death_message(exitcode)
            if not worker.ready:
                message += (
                    " while starting: worker processes import the main module, so a script "
                    "that uses LocalBackend must guard it with `if __name__ == \"__main__\":` "
                    "(see the worker's error output)"
                )
            self.runs.end(run, FlowRunState.CRASHED, message)

    def _shutdown_workers(self) -> None:
        with self.runs.lock:
            workers = list(self._workers)
            self._workers.clear()
            self._workers_version += 1
            self._poller = None
            for worker in workers:
                worker.dead = True
        for worker in workers:
            if worker.run is not None:
                worker.kill()
            worker.conn.close()  # an idle worker reads EOF and exits
        for worker in workers:
            worker.process.join(_JOIN_SECONDS)
            if worker.process.exitcode is None:
                worker.kill()
                worker.process.join()
            worker.process.close()
        with self.runs.lock:
            ends = (self._wake_r, self._wake_w, self._alive_r, self._alive_w)
            self._wake_r = self._wake_w = self._alive_r = self._alive_w = None
        for end in ends:
            if end is not None:
                end.close()
