"""DaskBackend beyond the contract: child processes that cancel really kills, a
killed Dask worker failing only its run, 200 runs at once, env and working_dir,
resources, logs, the three ways to get a cluster, and nothing left after close."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict

import pytest
from distributed import LocalCluster

from lume_scheduling.adapters.dask import DaskBackend
from lume_scheduling.adapters.dask._worker_side import WORKER_PLUGIN, run_key
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import (
    BackendUnavailableError,
    DaskRunConfig,
    FlowRunCancelledError,
    FlowRunNotFoundError,
    FlowRunState,
    FlowRunTimeoutError,
    LocalBackendError,
)

from .conftest import (
    SETTLE,
    descendants,
    echo_flow,
    make_cluster,
    pid_then_hang_flow,
    wait_for_file,
    wait_for_state,
    wait_until_gone,
    warn_flow,
    where_flow,
)


def _processing_on(dask_scheduler: Any, key: str) -> Any:
    task = dask_scheduler.tasks.get(key)
    return None if task is None or task.processing_on is None else task.processing_on.address


def _worker_of(backend: DaskBackend, flow_run_id: str) -> str:
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        address = backend.client.run_on_scheduler(_processing_on, key=run_key(flow_run_id))
        if address is not None:
            return address
        time.sleep(0.02)
    raise AssertionError(f"run {flow_run_id} was given to no worker")


def _running_in_plugin(dask_worker: Any) -> int:
    return dask_worker.plugins[WORKER_PLUGIN].running()


class TestCancelKillsTheChildProcess:
    def test_cancel_stops_the_process_running_the_flow(self, backend: DaskBackend, tmp_path: Path) -> None:
        pid_file = tmp_path / "pid"
        flow_run_id = backend.submit({"pid_file": str(pid_file)}, flow=pid_then_hang_flow)
        pid = int(wait_for_file(pid_file))
        assert pid != os.getpid()
        assert wait_for_state(backend, flow_run_id, FlowRunState.RUNNING)
        assert backend.cancel(flow_run_id) is True
        wait_until_gone(pid)
        assert backend.get_state(flow_run_id) is FlowRunState.CANCELLED
        with pytest.raises(FlowRunCancelledError):
            backend.result(flow_run_id)
        # The worker's thread is free again: nothing of the run is left there.
        deadline = time.monotonic() + SETTLE
        while sum(backend.client.run(_running_in_plugin).values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sum(backend.client.run(_running_in_plugin).values()) == 0

    def test_a_time_out_kills_it_too(self, backend: DaskBackend, tmp_path: Path) -> None:
        pid_file = tmp_path / "pid"
        with pytest.raises(FlowRunTimeoutError) as raised:
            backend.run_and_return({"pid_file": str(pid_file), "seconds": 60.0}, flow=pid_then_hang_flow, timeout=3)
        assert raised.value.cancelled is True
        wait_until_gone(int(wait_for_file(pid_file)))
        assert backend.get_state(raised.value.flow_run_id) is FlowRunState.CANCELLED

    def test_a_run_cancelled_before_it_starts_never_runs(self, backend: DaskBackend, tmp_path: Path) -> None:
        # Both workers busy: the third run waits on the scheduler.
        busy = [backend.submit({"pid_file": str(tmp_path / f"busy{n}")}, flow=pid_then_hang_flow) for n in range(2)]
        for n in range(2):
            wait_for_file(tmp_path / f"busy{n}")
        queued = backend.submit({"pid_file": str(tmp_path / "queued")}, flow=pid_then_hang_flow)
        # SCHEDULED even when the scheduler has handed the task to a busy worker
        # already (it hands out more tasks than threads): it has not started.
        time.sleep(0.5)
        assert backend.get_state(queued) is FlowRunState.SCHEDULED
        assert backend.cancel(queued) is True
        for flow_run_id in busy:
            assert backend.cancel(flow_run_id) is True
        assert backend.wait(queued, timeout=SETTLE) is FlowRunState.CANCELLED
        # Freed workers would have started it by now had it not been cancelled.
        assert backend.run_and_return({"x": 1}, task_name="echo", flow=echo_flow) == 1
        assert not (tmp_path / "queued").exists()


class TestAKilledWorkerFailsOnlyItsRun:
    def test_crashed_then_later_runs_succeed(self, tmp_path: Path) -> None:
        with make_cluster() as cluster, DaskBackend(cluster=cluster) as backend:
            pid_file = tmp_path / "pid"
            doomed = backend.submit({"pid_file": str(pid_file)}, flow=pid_then_hang_flow)
            child = int(wait_for_file(pid_file))
            others = [backend.submit({"x": x}, flow=echo_flow) for x in range(6)]
            address = _worker_of(backend, doomed)
            worker_pid = backend.client.run(os.getpid, workers=[address])[address]
            os.kill(worker_pid, signal.SIGKILL)
            assert backend.wait(doomed, timeout=SETTLE) is FlowRunState.CRASHED
            record = backend.get_result(doomed)
            assert "Dask worker" in (record.message or "") and "died" in (record.message or "")
            wait_until_gone(child)  # the flow's process went with its worker
            assert [backend.result(flow_run_id, "echo", timeout=SETTLE) for flow_run_id in others] == list(range(6))
            assert backend.run_and_return({"x": 7}, task_name="echo", flow=echo_flow, timeout=SETTLE) == 7


class TestManyRunsAtOnce:
    def test_200_runs_submitted_at_once_keep_their_own_results(self, backend: DaskBackend) -> None:
        ids = {backend.submit({"x": x, "y": 1000}, flow=flows.arithmetic_flow): x for x in range(200)}
        assert len(ids) == 200
        results = {x: backend.result(flow_run_id, "add", timeout=SETTLE) for flow_run_id, x in ids.items()}
        assert results == {x: x + 1000 for x in range(200)}

    def test_runs_from_threads(self, backend: DaskBackend) -> None:
        results: Dict[int, Any] = {}

        def one(x: int) -> None:
            results[x] = backend.run_and_return({"x": x}, task_name="echo", flow=echo_flow, timeout=SETTLE)

        threads = [threading.Thread(target=one, args=(x,)) for x in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SETTLE)
        assert results == {x: x for x in range(16)}


class TestRunConfig:
    def test_env_and_working_dir_apply_to_the_run_only(self, backend: DaskBackend, tmp_path: Path) -> None:
        before_env, before_cwd = dict(os.environ), os.getcwd()
        value = backend.run_and_return(
            {}, task_name="where", flow=where_flow, env={"LUME_DASK_TOKEN": "s3cr3t-token"}, working_dir=str(tmp_path)
        )
        assert value["cwd"] == str(tmp_path)
        assert value["token"] == "s3cr3t-token"
        assert value["pid"] != os.getpid()
        assert dict(os.environ) == before_env and os.getcwd() == before_cwd
        # The next run in the same warm child does not see them.
        again = backend.run_and_return({}, task_name="where", flow=where_flow)
        assert again["token"] is None and again["cwd"] != str(tmp_path)

    def test_a_working_dir_the_worker_cannot_enter_fails_the_run(self, backend: DaskBackend, tmp_path: Path) -> None:
        flow_run_id = backend.submit({}, flow=where_flow, working_dir=str(tmp_path / "missing"))
        assert backend.wait(flow_run_id, timeout=SETTLE) is FlowRunState.FAILED
        assert "working_dir cannot be entered" in (backend.get_result(flow_run_id).message or "")

    def test_env_values_are_masked_in_a_failed_runs_record(self, backend: DaskBackend) -> None:
        flow_run_id = backend.submit({"message": "token s3cr3t-token leaked"}, flow=flows.failing_flow, env={"T": "s3cr3t-token"})
        record = backend.get_result(flow_run_id, timeout=SETTLE)
        assert record.state is FlowRunState.FAILED
        # Masked on the worker, so every process reading the record sees it masked.
        assert record.message == "task 'explode-1': token ********** leaked"
        assert all("s3cr3t-token" not in (run.message or "") for run in record.task_runs)

    def test_run_config_and_labels_are_kept(self, backend: DaskBackend) -> None:
        config = DaskRunConfig(labels=["scan"], env={"A": "b"})
        flow_run_id = backend.submit({"x": 1}, config, flow=echo_flow)
        assert backend.get_run_config(flow_run_id) == config
        assert backend.get_labels(flow_run_id) == ["scan"]
        backend.wait(flow_run_id, timeout=SETTLE)

    def test_resources_pick_the_workers_that_have_them(self, backend: DaskBackend) -> None:
        # The session's workers declare no GPU: the run waits for one.
        flow_run_id = backend.submit({"x": 1}, flow=echo_flow, resources={"GPU": 1})
        with pytest.raises(FlowRunTimeoutError):
            backend.wait(flow_run_id, timeout=1.0)
        assert backend.get_state(flow_run_id) is FlowRunState.SCHEDULED
        assert backend.cancel(flow_run_id) is True
        with make_cluster(n_workers=1, resources={"GPU": 1}) as cluster, DaskBackend(cluster=cluster) as gpu:
            assert gpu.run_and_return({"x": 3}, task_name="echo", flow=echo_flow, resources={"GPU": 1}, timeout=SETTLE) == 3


class TestLogs:
    def test_a_runs_warnings_reach_the_callers_logger_masked(self, backend: DaskBackend, dask_logs: Any) -> None:
        backend.run_and_return({"text": "hello s3cr3t-token"}, flow=warn_flow, env={"T": "s3cr3t-token"})
        deadline = time.monotonic() + SETTLE
        while not any("the flow says" in r.getMessage() for r in dask_logs.records) and time.monotonic() < deadline:
            time.sleep(0.02)
        (record,) = [r for r in dask_logs.records if "the flow says" in r.getMessage()]
        assert record.getMessage() == "the flow says hello **********"
        assert record.levelname == "WARNING"


class TestWhereItRuns:
    def test_joining_by_address_never_closes_the_scheduler(self, dask_cluster: LocalCluster) -> None:
        with DaskBackend(dask_cluster.scheduler_address) as first:
            assert first.run_and_return({"x": 1}, task_name="echo", flow=echo_flow) == 1
        with DaskBackend(address=dask_cluster.scheduler_address) as second:
            assert second.run_and_return({"x": 2}, task_name="echo", flow=echo_flow) == 2
            assert second.scheduler_address == dask_cluster.scheduler_address

    def test_the_embedded_cluster_leaves_no_process_or_thread(self) -> None:
        processes_before = set(descendants())
        threads_before = {t for t in threading.enumerate()}
        with DaskBackend(n_workers=1) as backend:
            assert backend.run_and_return({"x": 5}, task_name="echo", flow=echo_flow) == 5
            assert set(descendants()) - processes_before, "the embedded cluster runs in processes of its own"
        deadline = time.monotonic() + SETTLE
        while set(descendants()) - processes_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(descendants()) - processes_before == set()
        # distributed's own offload thread is process-wide, started once and shared.
        left = {t for t in threading.enumerate() if t not in threads_before and not t.name.startswith("Dask-Offload")}
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = {t for t in left if t.is_alive()}
        assert left == set()

    def test_two_backends_share_the_cluster_and_each_sees_its_own_runs(self, dask_cluster: LocalCluster) -> None:
        with DaskBackend(cluster=dask_cluster) as one, DaskBackend(cluster=dask_cluster) as two:
            first = one.submit({"x": 1}, flow=echo_flow)
            assert two.run_and_return({"x": 2}, task_name="echo", flow=echo_flow) == 2
            with pytest.raises(FlowRunNotFoundError):
                two.get_state(first)
            assert one.result(first, "echo") == 1

    def test_an_unreachable_scheduler_is_backend_unavailable(self) -> None:
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="tcp://127.0.0.1:9"):
            DaskBackend("tcp://127.0.0.1:9", connect_timeout=2)
        assert time.monotonic() - started < SETTLE

    @pytest.mark.parametrize(
        "kwargs, error, match",
        [
            ({"address": ""}, ValueError, "address"),
            ({"address": 8786}, TypeError, "address"),
            ({"address": "tcp://x:1", "cluster": object()}, ValueError, "address or cluster"),
            ({"address": "tcp://x:1", "n_workers": 2}, ValueError, "embedded"),
            ({"n_workers": 0}, ValueError, "n_workers"),
            ({"threads_per_worker": True}, ValueError, "threads_per_worker"),
            ({"publish_runs": "yes"}, TypeError, "publish_runs"),
        ],
    )
    def test_bad_arguments_are_refused_by_name(self, kwargs: Dict[str, Any], error: type, match: str) -> None:
        with pytest.raises(error, match=match):
            DaskBackend(**kwargs)

    def test_server_operations_are_refused(self, backend: DaskBackend) -> None:
        with pytest.raises(LocalBackendError):
            backend.create_project("p")


class TestPublishedRuns:
    def test_another_backend_follows_reads_and_cancels_a_published_run(
        self, dask_cluster: LocalCluster, tmp_path: Path
    ) -> None:
        address = dask_cluster.scheduler_address
        with DaskBackend(address, publish_runs=True) as submitter:
            done = submitter.submit({"x": 41}, flow=echo_flow, labels=["scan"])
            hanging = submitter.submit({"pid_file": str(tmp_path / "pid")}, flow=pid_then_hang_flow)
            pid = int(wait_for_file(tmp_path / "pid"))
        # The submitting backend is gone; its published runs are not.
        with DaskBackend(address) as reader:
            assert reader.result(done, "echo", timeout=SETTLE) == 41
            assert reader.get_labels(done) == ["scan"]
            assert wait_for_state(reader, hanging, FlowRunState.RUNNING)
            assert reader.cancel(hanging) is True
            wait_until_gone(pid)
            reader.forget(done)
            reader.forget(hanging)
        with DaskBackend(address) as later:
            with pytest.raises(FlowRunNotFoundError):
                later.get_state(done)
