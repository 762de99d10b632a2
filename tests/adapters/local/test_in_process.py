"""``LocalBackend(isolated=False)``: flows run in this process, for debugging, with
what that mode documents it cannot guarantee kept as small as it can be."""

from __future__ import annotations

import os
import threading
import time

import pytest

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowRunState, FlowRunTimeoutError


def _runner_threads() -> list:
    return [thread for thread in threading.enumerate() if thread.name.startswith("lume-local-run")]


class TestInProcess:
    def test_flows_run_in_this_process(self, in_process: LocalBackend, isolated: LocalBackend, local_flows) -> None:
        assert in_process.run_and_return({}, None, "pid", flow=local_flows.pid) == os.getpid()
        assert isolated.run_and_return({}, None, "pid", flow=local_flows.pid) != os.getpid()

    def test_runs_that_set_env_are_serialised_and_see_their_own_values(
        self, in_process: LocalBackend, local_flows
    ) -> None:
        ids = [
            in_process.submit({"name": "LUME_WHO", "pause": 0.1}, flow=local_flows.env_after_pause, env={"LUME_WHO": who})
            for who in ("first", "second", "third")
        ]
        assert [in_process.result(i, "env_after_pause") for i in ids] == ["first", "second", "third"]
        assert "LUME_WHO" not in os.environ

    def test_a_timed_out_run_is_stopped_and_its_thread_ends(self, in_process: LocalBackend) -> None:
        with pytest.raises(FlowRunTimeoutError) as caught:
            in_process.run_and_return({"seconds": 60}, flow=flows.hanging_flow, timeout=0.3, env={"LUME_HUNG": "1"})
        assert caught.value.cancelled is True
        deadline = time.monotonic() + 5
        while _runner_threads() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _runner_threads() == []
        # The stopped run put the caller's environment back.
        assert "LUME_HUNG" not in os.environ
        assert in_process.get_state(caught.value.flow_run_id) is FlowRunState.CANCELLED

    def test_a_cancelled_run_frees_its_place_for_queued_runs(self) -> None:
        with LocalBackend(max_workers=1, isolated=False) as backend:
            hung = backend.submit({"seconds": 60}, flow=flows.hanging_flow)
            queued = backend.submit({"x": 1}, flow=flows.arithmetic_flow)
            time.sleep(0.1)
            assert backend.cancel(hung) is True
            assert backend.result(queued, "add", timeout=30) == 3

    def test_close_stops_runner_threads(self) -> None:
        backend = LocalBackend(isolated=False)
        running = backend.submit({"seconds": 60}, flow=flows.hanging_flow)
        time.sleep(0.1)
        backend.close()
        assert _runner_threads() == []
        assert backend._runs.get(running).state is FlowRunState.CANCELLED
