"""`DaskBackend`: Prefect 1 flow runs spread over a Dask cluster, without a Prefect Server.

Each flow run is one Dask task (key ``lume-run-<flow run id>``); on the Dask
worker it runs in a child process (see `_worker_side`), with the local
backend's worker-side run path. Where the cluster comes from:

* ``DaskBackend()``: an embedded ``distributed.LocalCluster`` (worker
  processes, one thread each), closed by `close`;
* ``DaskBackend(address="tcp://host:8786")``: an existing scheduler, never
  closed by us;
* ``DaskBackend(cluster=...)``: any Dask cluster object (a dask-jobqueue
  ``SLURMCluster``...); the caller owns and closes it.

Runs are followed through their Dask futures; with ``publish_runs=True`` each
run is also published on the scheduler as the dataset
``lume-scheduling-run-<id>``, so that another process joining the same
scheduler can follow, read and cancel it by id (the command line's ``submit``,
``status``, ``result`` and ``cancel``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from lume_scheduling.adapters.local._payload import dumps_parameters, flow_payload
from lume_scheduling.adapters.prefect_flows import flow_parameters, is_prefect_flow
from lume_scheduling.application.ports import (
    Backend,
    BackendCapabilities,
    DeclaredParameters,
    FlowRunRequest,
)
from lume_scheduling.domain import (
    BackendUnavailableError,
    DaskRunConfig,
    FlowRunNotFoundError,
    FlowRunResult,
    FlowRunState,
)

from ._worker_side import (
    LOG_TOPIC,
    SCHEDULER_PLUGIN,
    RunLedger,
    RunProcesses,
    RunRequest,
    run_flow,
    run_key,
)

LOGGER_NAME = "lume_scheduling.dask"
DATASET_PREFIX = "lume-scheduling-run-"
# Scheduler states of a task that has ended (its future is told soon after).
_ENDED_STATES = ("memory", "erred")
_NEWS_SECONDS = 30.0


def dataset_name(flow_run_id: str) -> str:
    """The name a published run has on the scheduler."""
    return f"{DATASET_PREFIX}{flow_run_id}"


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


@dataclass(eq=False)
class _DaskRun:
    """One flow run this backend follows."""

    flow_run_id: str
    flow_name: Optional[str]
    future: Any = field(repr=False)
    run_config: Optional[DaskRunConfig] = None
    labels: List[str] = field(default_factory=list)
    published: bool = False
    # Found through the scheduler's datasets (submitted by another backend).
    foreign: bool = False
    result: Optional[FlowRunResult] = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class DaskBackend(Backend):
    """Runs Prefect 1 flows on a Dask cluster: one Dask task per flow run.

    Runs take ``flow=`` (no server: ``create_project``, ``register_flow`` and
    ``load_flow`` raise `LocalBackendError`); keyword arguments that are not the
    backend's own build a `DaskRunConfig` (``labels``, ``env``, ``working_dir``,
    ``resources``). ``run`` waits and returns None, as on the local backend.

    On the Dask worker, a run executes in a warm child process of the worker
    (as many as the worker has threads), exactly as in `LocalBackend`'s worker
    processes: it sees the worker's environment plus the run config's ``env``,
    runs in ``working_dir`` (None: the worker's directory), with the caller's
    ``sys.path`` first; its record maps with the shared domain rules, with env
    values masked. ``cancel`` and time-outs kill that child (Dask cannot stop a
    running task; the worker's plugin kills the child as soon as Dask cancels
    the task). A Dask worker that dies ends its run CRASHED; the run is not
    started again elsewhere. ``resources`` pick workers that have them; labels
    are recorded only (`get_labels`).

    Log records of a run at or above the level of the logger
    ``lume_scheduling.dask`` (at submit time) reach that logger in this
    process, as Dask events.

    Args:
        address: A scheduler to join (``tcp://host:8786``); never closed here.
        cluster: A Dask cluster object to use (``LocalCluster``,
            ``SLURMCluster``...); its owner closes it.
        n_workers: Workers of the embedded cluster (default ``os.cpu_count()``).
        threads_per_worker: Threads (concurrent runs) per worker of the
            embedded cluster (default 1).
        publish_runs: Publish each run on the scheduler (dataset
            ``lume-scheduling-run-<id>``) so other processes can address it
            by id; its record then stays in the cluster's memory until
            `forget`. Runs published by others are found by id either way.
        connect_timeout: Seconds to wait for the scheduler.

    Raises:
        ValueError: Both ``address`` and ``cluster``, an empty address, or
            ``n_workers``/``threads_per_worker`` that are not positive integers
            or are given with ``address``/``cluster``.
        TypeError: ``address`` is not a string, or ``publish_runs`` not a bool.
        BackendUnavailableError: The scheduler cannot be reached, or the
            embedded cluster cannot start.
    """

    run_config_type = DaskRunConfig

    def __init__(
        self,
        address: Optional[str] = None,
        *,
        cluster: Any = None,
        n_workers: Optional[int] = None,
        threads_per_worker: Optional[int] = None,
        publish_runs: bool = False,
        connect_timeout: float = 30.0,
    ) -> None:
        if address is not None:
            if not isinstance(address, str):
                raise TypeError(f"address must be a string such as 'tcp://host:8786', not {type(address).__name__}")
            if not address.strip():
                raise ValueError("address must be a non-empty scheduler address such as 'tcp://host:8786'")
        if address is not None and cluster is not None:
            raise ValueError("give address or cluster, not both")
        embedded = address is None and cluster is None
        if not embedded and (n_workers is not None or threads_per_worker is not None):
            raise ValueError("n_workers and threads_per_worker size the embedded cluster only (no address, no cluster)")
        if n_workers is not None:
            _positive_int("n_workers", n_workers)
        if threads_per_worker is not None:
            _positive_int("threads_per_worker", threads_per_worker)
        if not isinstance(publish_runs, bool):
            raise TypeError(f"publish_runs must be True or False, not {publish_runs!r}")
        self._address = address
        self._publish = publish_runs
        self._logger = logging.getLogger(LOGGER_NAME)
        self._lock = threading.Lock()
        self._runs: Dict[str, _DaskRun] = {}
        self._owned_cluster: Any = None
        self._client: Any = None
        from distributed import Client

        try:
            if embedded:
                from distributed import LocalCluster

                self._owned_cluster = LocalCluster(
                    n_workers=n_workers or os.cpu_count() or 1,
                    threads_per_worker=threads_per_worker or 1,
                    processes=True,
                    dashboard_address=None,
                    # No dashboard; its HTTP server (health, metrics) on a free port.
                    scheduler_kwargs={"dashboard_address": ":0"},
                )
                cluster = self._owned_cluster
            self._client = Client(
                address if address is not None else cluster,
                timeout=connect_timeout,
                set_as_default=False,
            )
            self._client.register_plugin(RunLedger())
            self._client.register_plugin(RunProcesses())
            self._client.subscribe_topic(LOG_TOPIC, self._on_log)
        except Exception as err:
            self._release()
            where = address or ("an embedded LocalCluster" if embedded else type(cluster).__name__)
            raise BackendUnavailableError(
                "DaskBackend", f"the Dask scheduler of {where} cannot be used: {type(err).__name__}: {err}"
            ) from err
        self._scheduler_address = self._client.scheduler.address

    def __repr__(self) -> str:
        where = "embedded LocalCluster" if self._owned_cluster is not None else "joined"
        return f"DaskBackend({getattr(self, '_scheduler_address', '?')!r}, {where})"

    # ---------------------------------------------------------------- identity

    @property
    def capabilities(self) -> BackendCapabilities:
        """No server; cancel and time-outs kill the run's child process;
        isolation (runs execute in child processes of Dask workers)."""
        return BackendCapabilities(server=False, cancel=True, timeout=True, isolation=True)

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` this backend uses (do not close it)."""
        return self._client

    @property
    def scheduler_address(self) -> str:
        """The address of the Dask scheduler."""
        return self._scheduler_address

    @property
    def publish_runs(self) -> bool:
        """Whether runs are published on the scheduler (see the class docstring)."""
        return self._publish

    # ---------------------------------------------------------------- closing

    def _close(self) -> None:
        """Stop following runs and disconnect; close the embedded cluster.

        Runs that have not ended are cancelled, except published ones, which
        go on in the cluster (other processes may follow them).
        """
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            with run.lock:
                if run.result is None and not run.published:
                    run.result = self._ended(run, FlowRunState.CANCELLED, "the backend was closed before the run ended")
        self._release()

    def _release(self) -> None:
        client, self._client = self._client, None
        cluster, self._owned_cluster = self._owned_cluster, None
        if client is not None:
            try:
                client.unsubscribe_topic(LOG_TOPIC)
            except Exception:  # noqa: BLE001 - not subscribed, or already disconnected
                pass
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if cluster is not None:
            cluster.close()

    # ------------------------------------------------------------ accessors

    def get_run_config(self, flow_run_id: str) -> DaskRunConfig:
        """The run config a run of this backend was submitted with.

        Raises:
            FlowRunNotFoundError: Not a run submitted by this backend.
            BackendUnavailableError: The backend was closed.
        """
        self._check_open()
        run = self._run(flow_run_id)
        if run.run_config is None:
            raise FlowRunNotFoundError(flow_run_id)
        return run.run_config

    def get_labels(self, flow_run_id: str) -> List[str]:
        """The labels of a run's run config (published runs carry theirs).

        Raises:
            FlowRunNotFoundError: Unknown id.
            BackendUnavailableError: The backend was closed.
        """
        self._check_open()
        return list(self._run(flow_run_id).labels)

    def forget(self, flow_run_id: str) -> None:
        """Unpublish a run and let the cluster drop its record (a run that has
        not ended is cancelled by Dask if no one else holds it).

        Raises:
            FlowRunNotFoundError: Unknown id.
            BackendUnavailableError: The backend was closed.
        """
        self._check_open()
        run = self._run(flow_run_id)
        try:
            self._client.unpublish_dataset(dataset_name(flow_run_id))
        except KeyError:
            pass
        with self._lock:
            self._runs.pop(flow_run_id, None)
        run.future.release()

    # ---------------------------------------------------------------- hooks

    def _submit(self, request: FlowRunRequest) -> str:
        flow = request.flow
        if not is_prefect_flow(flow):
            raise TypeError(f"flow must be a Prefect 1 Flow, not {type(flow).__name__}")
        config = request.run_config
        assert isinstance(config, DaskRunConfig)
        cwd = os.getcwd()
        sys_path = [cwd if entry == "" else entry for entry in sys.path]
        payload = flow_payload(flow, sys_path)
        parameters = dumps_parameters(request.parameters, sys_path)
        flow_run_id = str(uuid.uuid4())
        sent = RunRequest(
            flow_run_id=flow_run_id,
            flow_name=flow.name,
            digest=payload.digest,
            flow=payload.data,
            parameters=parameters,
            env=dict(config.env) if config.env else None,
            working_dir=config.working_dir,
            sys_path=tuple(sys_path),
            log_level=self._logger.getEffectiveLevel(),
        )
        client = self._client
        try:
            future = client.submit(
                run_flow,
                sent,
                key=run_key(flow_run_id),
                pure=False,
                resources=dict(config.resources) if config.resources else None,
            )
        except Exception as err:
            raise BackendUnavailableError(
                "DaskBackend", f"the run cannot be handed to the scheduler: {type(err).__name__}: {err}"
            ) from err
        run = _DaskRun(flow_run_id, flow.name, future, config, list(config.labels), self._publish)
        with self._lock:
            self._runs[flow_run_id] = run
        if self._publish:
            try:
                client.publish_dataset(**{dataset_name(flow_run_id): _published(run)})
            except Exception as err:
                future.cancel()
                raise BackendUnavailableError(
                    "DaskBackend", f"the run cannot be published: {type(err).__name__}: {err}"
                ) from err
        return flow_run_id

    def _flow_parameters(self, flow: Any, flow_id: Optional[str]) -> Optional[DeclaredParameters]:
        if not is_prefect_flow(flow):
            return None  # _submit says what is wrong with it
        return flow.name, flow_parameters(flow)

    def _get_state(self, flow_run_id: str) -> FlowRunState:
        run = self._run(flow_run_id)
        if run.result is None and run.future.done():
            self._collect(run)
        if run.result is not None:
            return run.result.state
        return self._pending_state(run)

    def _pending_state(self, run: _DaskRun) -> FlowRunState:
        """RUNNING once a worker has started the run's flow (its message has
        reached the scheduler's ledger); SCHEDULED before, also while the task
        waits on a worker for a free thread."""
        key = run_key(run.flow_run_id)
        try:
            states = self._client.run_on_scheduler(_scheduler_states, keys=[key])
        except Exception:  # noqa: BLE001 - a scheduler without our plugin: say what we know
            return FlowRunState.SCHEDULED
        state = states.get(key)
        if state is None and run.foreign:
            with run.lock:
                if run.result is None:
                    run.result = self._ended(
                        run, FlowRunState.CRASHED, "the Dask scheduler no longer has the run's task (it was lost)"
                    )
            return run.result.state
        if state in _ENDED_STATES:
            # Done on the cluster; this client's future hears of it in a moment.
            try:
                self._wait_for(run, _NEWS_SECONDS)
            except TimeoutError:
                return FlowRunState.RUNNING
            self._collect(run)
            assert run.result is not None
            return run.result.state
        return FlowRunState.RUNNING if state == "started" else FlowRunState.SCHEDULED

    def _wait(self, flow_run_id: str, timeout: Optional[float]) -> FlowRunState:
        run = self._run(flow_run_id)
        if run.result is None and not self._fetch(run, timeout):
            return self._get_state(flow_run_id)
        assert run.result is not None
        return run.result.state

    def _fetch(self, run: _DaskRun, timeout: Optional[float]) -> bool:
        """Wait for the run's record and read it (one trip through the client's
        loop); False if ``timeout`` seconds passed first."""
        if run.result is not None:
            return True
        try:
            value = run.future.result(timeout=timeout)
        except TimeoutError:
            return False
        except Exception:  # noqa: BLE001 - cancelled, erred, lost: the future's status says which
            if self._client is None:
                raise BackendUnavailableError("DaskBackend", "it was closed") from None
            self._collect(run)
            return True
        with run.lock:
            if run.result is None:
                run.result = value
        if not run.published:
            run.future.release()
        return True

    def _wait_for(self, run: _DaskRun, timeout: Optional[float]) -> None:
        """Until the run's future is done (TimeoutError after ``timeout`` s)."""
        # distributed.wait() would look for a default client: we have our own.
        from distributed.client import _wait

        try:
            self._client.sync(_wait, [run.future], timeout=timeout)
        except TimeoutError:
            raise
        except Exception as err:
            if self._client is None or self._closed:
                raise BackendUnavailableError("DaskBackend", "it was closed") from err
            raise BackendUnavailableError(
                "DaskBackend", f"the scheduler cannot be reached: {type(err).__name__}: {err}"
            ) from err

    def _get_result(self, flow_run_id: str) -> FlowRunResult:
        run = self._run(flow_run_id)
        self._fetch(run, None)
        assert run.result is not None
        return run.result

    def _cancel(self, flow_run_id: str) -> bool:
        run = self._run(flow_run_id)
        if run.result is None and run.future.done():
            self._collect(run)
        with run.lock:
            if run.result is not None:
                return False
            run.result = self._ended(run, FlowRunState.CANCELLED, "the flow run was cancelled")
        try:
            if run.published:
                # Readers in other processes find it cancelled, not merely gone.
                self._client.publish_dataset(
                    **{dataset_name(flow_run_id): _published(run, cancelled=True)}, override=True
                )
            # force: cancelled for every client holding it (another process's too).
            self._client.cancel([run.future], force=True)
        except Exception as err:
            raise BackendUnavailableError(
                "DaskBackend", f"the scheduler cannot be told to cancel: {type(err).__name__}: {err}"
            ) from err
        return True

    # ------------------------------------------------------------ internals

    def _run(self, flow_run_id: str) -> _DaskRun:
        """A run of this backend, or one published on the scheduler.

        Raises:
            FlowRunNotFoundError: Neither.
        """
        run = self._runs.get(flow_run_id)
        if run is not None:
            return run
        try:
            published = self._client.get_dataset(dataset_name(flow_run_id))
        except KeyError:
            raise FlowRunNotFoundError(flow_run_id) from None
        except Exception as err:
            raise BackendUnavailableError(
                "DaskBackend", f"the scheduler cannot be asked for run {flow_run_id}: {type(err).__name__}: {err}"
            ) from err
        run = _DaskRun(
            flow_run_id,
            published.get("flow_name"),
            published["future"],
            labels=list(published.get("labels") or ()),
            published=True,
            foreign=True,
        )
        if published.get("cancelled"):
            run.result = self._ended(run, FlowRunState.CANCELLED, "the flow run was cancelled")
        with self._lock:
            return self._runs.setdefault(flow_run_id, run)

    def _collect(self, run: _DaskRun) -> None:
        """Turn a done future into the run's record (once)."""
        with run.lock:
            if run.result is not None:
                return
            future = run.future
            status = future.status
            if status == "finished":
                try:
                    run.result = future.result()
                except Exception as err:  # noqa: BLE001 - lost between status and fetch
                    run.result = self._ended(run, FlowRunState.CRASHED, f"the run's record was lost: {err}")
            elif status == "cancelled":
                run.result = self._ended(run, FlowRunState.CANCELLED, "the flow run was cancelled")
            elif status == "error":
                err = future.exception()
                if type(err).__name__ == "KilledWorker":
                    message = f"the Dask worker running the flow died ({err})"
                else:
                    message = f"the Dask task failed: {type(err).__name__}: {err}"
                run.result = self._ended(run, FlowRunState.CRASHED, message)
            else:
                run.result = self._ended(run, FlowRunState.CRASHED, f"the Dask task is {status}")
        if not run.published:
            future.release()  # the cluster may drop it: the record is here now

    def _ended(self, run: _DaskRun, state: FlowRunState, message: str) -> FlowRunResult:
        return FlowRunResult(
            flow_run_id=run.flow_run_id, flow_id=None, state=state, message=message, flow_name=run.flow_name
        )

    def _on_log(self, event: Any) -> None:
        """A log record of a child process, as a Dask event (the client's loop thread)."""
        try:
            _, fields = event
            if not isinstance(fields, Mapping) or fields.get("flow_run_id") not in self._runs:
                return
            record = logging.makeLogRecord(dict(fields))
            if self._logger.isEnabledFor(record.levelno):
                self._logger.handle(record)
        except Exception:  # noqa: BLE001 - a log line must never break the client
            pass


def _published(run: _DaskRun, cancelled: bool = False) -> Dict[str, Any]:
    """What a published run's dataset holds."""
    return {"future": run.future, "flow_name": run.flow_name, "labels": list(run.labels), "cancelled": cancelled}


def _scheduler_states(dask_scheduler: Any, keys: List[str]) -> Dict[str, Optional[str]]:
    """The scheduler's state of each key (run on the scheduler); ``"started"``
    for a processing task whose worker has said it started the flow.

    "processing" alone is not running: the scheduler hands a worker more tasks
    than it has threads (``distributed.scheduler.worker-saturation``), and a
    task handed over waits there until a thread is free.
    """
    ledger = dask_scheduler.plugins.get(SCHEDULER_PLUGIN)
    found: Dict[str, Optional[str]] = {}
    for key in keys:
        task = dask_scheduler.tasks.get(key)
        if task is None:
            found[key] = None
        elif task.state == "processing" and ledger is not None and ledger.has_started(key):
            found[key] = "started"
        else:
            found[key] = task.state
    return found


__all__ = ["DaskBackend", "LOGGER_NAME", "dataset_name"]
