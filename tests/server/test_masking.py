"""Env values of a run config are masked in what the server backends report,
also for runs another process (another backend) created."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from lume_scheduling.adapters.server import DockerBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowFailedError

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
