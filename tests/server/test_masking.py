"""Env values of a run config are masked in what the server backends report,
also for runs another process (another backend) created."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, List

import pytest

from lume_scheduling.adapters.server import DockerBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowFailedError, FlowRunState

PROJECT = sys.modules[next(name for name in sys.modules if name.endswith("server.conftest"))].PROJECT
SECRET = "s3cr3t-token-in-a-task-exception"


def test_a_run_created_elsewhere_is_masked_with_its_run_configs_env(emulator: Any, docker: DockerBackend) -> None:
    flow_id = docker.register_flow(flows.failing_flow, PROJECT, no_url=True)
    flow_run_id = docker.submit({"message": f"refused {SECRET}"}, flow_id=flow_id, env={"TOKEN": SECRET})
    with DockerBackend(emulator.config()) as other:  # as `lume-scheduling result RUN_ID` would
        with pytest.raises(FlowFailedError) as raised:
            other.result(flow_run_id, timeout=30)
        assert SECRET not in str(raised.value) + repr(raised.value)
        assert "refused **********" in str(raised.value)
        record = other.get_result(flow_run_id)
        assert all(SECRET not in (run.message or "") for run in record.task_runs)
        # The project name travels in the run's env too; it is not masked.
        assert record.project_name == PROJECT


def _logged_lines(caplog: pytest.LogCaptureFixture, flow_run_id: str) -> List[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "flow_run_id", None) == flow_run_id]


def _ended_with_every_log_line(emulator: Any, flow_run_id: str) -> None:
    """Wait (reading the emulator, not through a backend) until the run has failed and
    its runner has exited: prefect's runner ships its last log batch at exit."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = emulator.store.get("flow_run", flow_run_id) or {}
        if run.get("state") == "Failed" and not emulator.agent.running(flow_run_id):
            return
        time.sleep(0.05)
    raise AssertionError(f"flow run {flow_run_id} did not end within 60 s")


def _failed_with_a_secret_logged(emulator: Any, docker: DockerBackend) -> str:
    """A run of the failing flow, created by ``docker`` with ``SECRET`` in its env
    and in the exception its task raises, ended with every log line written."""
    flow_id = docker.register_flow(flows.failing_flow, PROJECT, no_url=True)
    flow_run_id = docker.submit({"message": f"refused {SECRET}"}, flow_id=flow_id, env={"TOKEN": SECRET})
    _ended_with_every_log_line(emulator, flow_run_id)
    return flow_run_id


@pytest.mark.real_agent
class TestForwardedLogLines:
    """The run's own log lines, written by prefect's runner and read back from the
    server, reach our logger with the run config's env values masked."""

    def test_of_a_run_this_backend_created(
        self, emulator: Any, docker: DockerBackend, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        flow_run_id = _failed_with_a_secret_logged(emulator, docker)
        # the runner logged the task's exception, with the secret, on the server
        assert any(SECRET in row["message"] for row in emulator.store.where("log", flow_run_id=flow_run_id))
        start = emulator.server.request_count
        assert docker.wait(flow_run_id, timeout=30) is FlowRunState.FAILED
        lines = _logged_lines(caplog, flow_run_id)
        assert any("refused **********" in line for line in lines), lines
        assert all(SECRET not in record.getMessage() for record in caplog.records)
        # the env values of its own runs are known: nothing more is asked
        asked = emulator.server.requests_of("client")[start:]
        assert asked and not any("run_config" in r.query for r in asked)

    def test_of_a_run_created_elsewhere(
        self, emulator: Any, docker: DockerBackend, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        flow_run_id = _failed_with_a_secret_logged(emulator, docker)
        with DockerBackend(emulator.config()) as other:  # as `lume-scheduling result RUN_ID` would
            assert other.wait(flow_run_id, timeout=30) is FlowRunState.FAILED
            with pytest.raises(FlowFailedError):
                other.result(flow_run_id)
        lines = _logged_lines(caplog, flow_run_id)
        assert any("refused **********" in line for line in lines), lines
        assert all(SECRET not in record.getMessage() for record in caplog.records)
