"""The console script on the Dask backend, end to end: ``run --backend dask`` on
an embedded cluster, and ``submit``/``status``/``result``/``cancel`` from
separate processes through a scheduler address (a real LocalCluster started by
this module; nothing skips)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from distributed import LocalCluster

FLOWS = "lume_scheduling.adapters.testing.flows"
USAGE = 2


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of a running Dask scheduler with two workers."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},
    ) as cluster:
        yield cluster.scheduler_address


class TestRunOnTheEmbeddedCluster:
    def test_run_prints_the_result_and_the_flows_log(self, lume: Any) -> None:
        done = lume(
            "run", "--backend", "dask", "examples/hello_flow.py", "-p", "name=LUME", "-p", "n=4",
            env={"LUME_SCHEDULING_DASK__N_WORKERS": "1"},
        )
        assert done.code == 0, done.err
        assert json.loads(done.out) == {
            "greeting-1": "Hello, LUME!",
            "n": 4,
            "name": "LUME",
            "squares-1": [1, 4, 9, 16],
            "sum_of_squares-1": 30,
        }
        assert "submitted to the dask backend" in done.err

    def test_commands_by_id_need_a_scheduler_address(self, lume: Any) -> None:
        done = lume("--backend", "dask", "status", "some-id")
        assert done.code == USAGE
        assert done.error_lines == [
            "lume-scheduling: error: status needs a Dask scheduler address (dask.address, or "
            "LUME_SCHEDULING_DASK__ADDRESS=tcp://host:8786): runs of the embedded Dask cluster "
            "live in the process that started them; use 'lume-scheduling run' instead"
        ]


class TestRunsAcrossProcesses:
    def test_submit_then_status_and_result_from_other_processes(self, lume: Any, scheduler: str) -> None:
        env = {"LUME_SCHEDULING_BACKEND": "dask", "LUME_SCHEDULING_DASK__ADDRESS": scheduler}
        submitted = lume("submit", f"{FLOWS}:arithmetic_flow", "-p", "x=4", "-p", "y=5", env=env)
        assert submitted.code == 0, submitted.err
        flow_run_id = submitted.out.strip()
        result = lume("result", flow_run_id, "--task", "add", "--timeout", "60", env=env)
        assert result.code == 0, result.err
        assert json.loads(result.out) == 9
        status = lume("status", flow_run_id, env=env)
        assert (status.code, status.out) == (0, "success\n"), status.err

    def test_cancel_from_another_process(self, lume: Any, scheduler: str, tmp_path: Path) -> None:
        env = {"LUME_SCHEDULING_BACKEND": "dask", "LUME_SCHEDULING_DASK__ADDRESS": scheduler}
        submitted = lume("submit", f"{FLOWS}:hanging_flow", env=env)
        assert submitted.code == 0, submitted.err
        flow_run_id = submitted.out.strip()
        deadline = time.monotonic() + 60
        while True:
            status = lume("status", flow_run_id, env=env)
            assert status.code == 0, status.err
            if status.out.strip() == "running" or time.monotonic() > deadline:
                break
        assert status.out.strip() == "running"
        cancelled = lume("cancel", flow_run_id, env=env)
        assert (cancelled.code, cancelled.out) == (0, "cancelled\n"), cancelled.err
        status = lume("status", flow_run_id, env=env)
        assert status.out.strip() == "cancelled"

    def test_an_unknown_id_is_not_found(self, lume: Any, scheduler: str) -> None:
        env = {"LUME_SCHEDULING_BACKEND": "dask", "LUME_SCHEDULING_DASK__ADDRESS": scheduler}
        done = lume("status", "no-such-run", env=env)
        assert done.code == 6, done.err
        assert len(done.error_lines) == 1 and "no-such-run" in done.error_lines[0]
