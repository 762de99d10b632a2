"""The run config takes effect: env, working_dir and labels, without leaking into the caller."""

from __future__ import annotations

import os

import pytest

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import LocalRunConfig


class TestEnv:
    def test_a_task_sees_the_run_configs_env(self, backend: LocalBackend) -> None:
        value = backend.run_and_return(
            {"name": "LUME_RUN_ONLY"}, None, "read_env", flow=flows.environment_flow, env={"LUME_RUN_ONLY": "yes"}
        )
        assert value == "yes"

    def test_the_callers_environ_is_exactly_as_before(self, backend: LocalBackend, monkeypatch) -> None:
        monkeypatch.setenv("LUME_OVERRIDDEN", "caller")
        before = dict(os.environ)
        value = backend.run_and_return(
            {"name": "LUME_OVERRIDDEN"},
            flow=flows.environment_flow,
            env={"LUME_OVERRIDDEN": "run", "LUME_ADDED": "run"},
            task_name="read_env",
        )
        assert value == "run"
        assert dict(os.environ) == before

    def test_a_run_sees_the_callers_environment_at_submit_time(self, backend: LocalBackend, monkeypatch) -> None:
        monkeypatch.setenv("LUME_FROM_CALLER", "set-after-the-backend-started")
        value = backend.run_and_return({"name": "LUME_FROM_CALLER"}, None, "read_env", flow=flows.environment_flow)
        assert value == "set-after-the-backend-started"

    def test_env_of_one_run_does_not_reach_the_next(self, backend: LocalBackend) -> None:
        backend.run({"name": "LUME_ONCE"}, flow=flows.environment_flow, env={"LUME_ONCE": "1"})
        values = backend.run_and_return({"name": "LUME_ONCE"}, flow=flows.environment_flow)
        assert values["read_env-1"] is None


class TestWorkingDir:
    def test_a_task_runs_in_the_working_dir(self, backend: LocalBackend, tmp_path) -> None:
        cwd = os.getcwd()
        assert backend.run_and_return({}, None, "working_dir", flow=flows.environment_flow, working_dir=tmp_path) == str(tmp_path)
        assert os.getcwd() == cwd

    def test_none_means_the_callers_directory_at_submit_time(self, backend: LocalBackend, tmp_path, monkeypatch) -> None:
        monkeypatch.chdir(tmp_path)
        assert backend.run_and_return({}, LocalRunConfig(), "working_dir", flow=flows.environment_flow) == str(tmp_path)
        assert os.getcwd() == str(tmp_path)

    def test_a_working_dir_removed_before_the_run_fails_it(self, isolated: LocalBackend, tmp_path) -> None:
        doomed = tmp_path / "doomed"
        doomed.mkdir()
        config = LocalRunConfig(working_dir=doomed)
        doomed.rmdir()
        with pytest.raises(Exception, match="working_dir cannot be entered"):
            isolated.run({}, config, flow=flows.environment_flow)


class TestLabels:
    def test_labels_are_recorded_on_the_run(self, backend: LocalBackend) -> None:
        flow_run_id = backend.submit({}, flow=flows.arithmetic_flow, labels=["gpu", "night"])
        assert backend.get_labels(flow_run_id) == ["gpu", "night"]
        backend.wait(flow_run_id)

    def test_default_labels(self, backend: LocalBackend) -> None:
        flow_run_id = backend.submit({}, flow=flows.arithmetic_flow)
        assert backend.get_labels(flow_run_id) == ["lume-services"]
        backend.wait(flow_run_id)

    def test_the_recorded_run_config_masks_env_values_in_its_repr(self, backend: LocalBackend) -> None:
        flow_run_id = backend.submit({}, flow=flows.arithmetic_flow, env={"TOKEN": "s3cr3t-value"})
        backend.wait(flow_run_id)
        assert "s3cr3t-value" not in repr(backend.get_run_config(flow_run_id))
        assert "s3cr3t-value" not in repr(backend)
