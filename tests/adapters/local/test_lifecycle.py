"""The run lifecycle locally: submit, state, wait, result, cancel, time-outs and crashes."""

from __future__ import annotations

import os
import time

import pytest

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import (
    FlowFailedError,
    FlowRunCancelledError,
    FlowRunNotFoundError,
    FlowRunState,
    FlowRunTimeoutError,
)


def _pid_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A killed child of ours may linger as a zombie until reaped.
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                if stat.read().split(")")[-1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.02)
    return False


class TestSubmit:
    def test_submit_returns_at_once_and_the_run_can_be_followed(self, backend: LocalBackend) -> None:
        started = time.monotonic()
        flow_run_id = backend.submit({"seconds": 0.5}, flow=flows.hanging_flow)
        assert time.monotonic() - started < 0.4
        assert backend.get_state(flow_run_id) in (FlowRunState.SCHEDULED, FlowRunState.RUNNING)
        assert backend.wait(flow_run_id, 30) is FlowRunState.SUCCESS
        assert backend.result(flow_run_id, "hang") == "woke"

    def test_wait_time_out_raises_and_leaves_the_run_going(self, backend: LocalBackend) -> None:
        flow_run_id = backend.submit({"seconds": 60}, flow=flows.hanging_flow)
        with pytest.raises(FlowRunTimeoutError):
            backend.wait(flow_run_id, 0.2)
        assert backend.get_state(flow_run_id) in (FlowRunState.SCHEDULED, FlowRunState.RUNNING)
        assert backend.cancel(flow_run_id) is True

    def test_unknown_ids_raise_flow_run_not_found(self, backend: LocalBackend) -> None:
        for call in (backend.get_state, backend.wait, backend.cancel, backend.result, backend.get_labels):
            with pytest.raises(FlowRunNotFoundError):
                call("no-such-run")


class TestCancel:
    def test_cancel_stops_a_hanging_run(self, backend: LocalBackend) -> None:
        flow_run_id = backend.submit({"seconds": 60}, flow=flows.hanging_flow)
        time.sleep(0.3)  # let it start
        assert backend.cancel(flow_run_id) is True
        assert backend.get_state(flow_run_id) is FlowRunState.CANCELLED
        with pytest.raises(FlowRunCancelledError):
            backend.result(flow_run_id)
        assert backend.cancel(flow_run_id) is False
        # The backend goes on.
        assert backend.run_and_return({"x": 1}, None, "add", flow=flows.arithmetic_flow) == 3

    def test_cancel_of_a_queued_run(self) -> None:
        with LocalBackend(max_workers=1) as backend:
            first = backend.submit({"seconds": 60}, flow=flows.hanging_flow)
            queued = backend.submit({"x": 1}, flow=flows.arithmetic_flow)
            assert backend.get_state(queued) is FlowRunState.SCHEDULED
            assert backend.cancel(queued) is True
            assert backend.cancel(first) is True
            assert backend.run_and_return({"x": 1}, None, "add", flow=flows.arithmetic_flow) == 3

    def test_cancel_kills_the_worker_and_the_flows_own_subprocesses(
        self, isolated: LocalBackend, local_flows, tmp_path
    ) -> None:
        pid_file = tmp_path / "child.pid"
        worker_pid = isolated.run_and_return({}, None, "pid", flow=local_flows.pid)
        flow_run_id = isolated.submit({"pid_file": str(pid_file)}, flow=local_flows.child_process)
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        child_pid = int(pid_file.read_text())
        assert isolated.cancel(flow_run_id) is True
        assert _pid_gone(child_pid), "the task's subprocess outlived the cancelled run"
        assert _pid_gone(worker_pid) or isolated.run_and_return({}, None, "pid", flow=local_flows.pid) != worker_pid


class TestTimeout:
    def test_run_and_return_time_out_kills_the_hung_run(self, isolated: LocalBackend) -> None:
        started = time.monotonic()
        with pytest.raises(FlowRunTimeoutError) as caught:
            isolated.run_and_return({"seconds": 60}, flow=flows.hanging_flow, timeout=0.5)
        assert time.monotonic() - started < 10
        assert caught.value.cancelled is True
        assert isinstance(caught.value, RuntimeError)
        assert isolated.get_state(caught.value.flow_run_id) is FlowRunState.CANCELLED
        assert isolated.run_and_return({"x": 2}, None, "add", flow=flows.arithmetic_flow) == 4

    def test_without_cancel_on_timeout_the_run_goes_on(self, backend: LocalBackend) -> None:
        with pytest.raises(FlowRunTimeoutError) as caught:
            backend.run_and_return({"seconds": 0.6}, flow=flows.hanging_flow, timeout=0.1, cancel_on_timeout=False)
        assert caught.value.cancelled is False
        assert backend.result(caught.value.flow_run_id, "hang", timeout=30) == "woke"


class TestCrash:
    @pytest.mark.parametrize(
        ("flow_name", "parameters", "cause"),
        [("crash_exit", {"code": 3}, "exit code 3"), ("crash_segfault", {}, "SIGSEGV")],
    )
    def test_a_flow_that_kills_its_interpreter_ends_crashed(
        self, isolated: LocalBackend, local_flows, flow_name, parameters, cause
    ) -> None:
        with pytest.raises(FlowFailedError) as caught:
            isolated.run_and_return(parameters, flow=getattr(local_flows, flow_name))
        error = caught.value
        assert error.state == "crashed"
        assert "worker process running the flow died" in str(error) and cause in str(error)
        assert isolated.get_state(error.flow_run_id) is FlowRunState.CRASHED
        # The caller goes on and the backend stays usable.
        assert isolated.run_and_return({"x": 5}, None, "add", flow=flows.arithmetic_flow) == 7
