"""The seed's calls on the local backend: run, run_and_return and the server-only three."""

from __future__ import annotations

import warnings

import pydantic
import pytest

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowFailedError, FlowParameterError, LocalBackendError, LocalRunConfig


class TestRun:
    def test_run_returns_none_once_the_flow_has_run(self, backend: LocalBackend, tmp_path) -> None:
        # The flow's task really ran: it saw the working_dir it was given.
        assert backend.run({"name": "HOME"}, flow=flows.environment_flow, working_dir=str(tmp_path)) is None

    def test_run_of_a_failing_flow_raises_with_name_id_and_cause(self, backend: LocalBackend) -> None:
        with pytest.raises(FlowFailedError) as caught:
            backend.run({"message": "it broke"}, flow=flows.failing_flow)
        error = caught.value
        assert error.flow_name == "failing"
        assert error.exception_type == "ValueError"
        assert "it broke" in error.exception_message
        assert error.state == "failed"
        assert backend.get_state(error.flow_run_id).value == "failed"
        assert "ValueError" in str(error) and "it broke" in str(error) and error.flow_run_id in str(error)

    def test_parameters_the_flow_does_not_declare_are_a_value_error_before_it_runs(self, backend: LocalBackend) -> None:
        # As the original's flow.run() raised: a ValueError, and no run.
        with pytest.raises(ValueError) as caught:
            backend.run({"no_such_parameter": 1}, flow=flows.arithmetic_flow)
        assert isinstance(caught.value, FlowParameterError)
        assert "no parameter 'no_such_parameter'" in str(caught.value)
        assert backend._runs.unfinished() == [] and not backend._runs._runs


class TestRunAndReturn:
    def test_returns_every_task_by_slug(self, backend: LocalBackend) -> None:
        assert backend.run_and_return({"x": 2, "y": 5}, flow=flows.arithmetic_flow) == {
            "x": 2,
            "y": 5,
            "add-1": 7,
            "add_more-1": 17,
            "multiply-1": 10,
        }

    def test_a_task_name_selects_exactly_that_task(self, backend: LocalBackend) -> None:
        assert backend.run_and_return({"x": 2, "y": 5}, None, "add", flow=flows.arithmetic_flow) == 7

    def test_data_by_keyword_and_parameters_alias(self, isolated: LocalBackend) -> None:
        assert isolated.run_and_return(data={"x": 3}, task_name="add", flow=flows.arithmetic_flow) == 5
        assert isolated.run_and_return(parameters={"x": 4}, task_name="add", flow=flows.arithmetic_flow) == 6
        flow_run_id = isolated.submit(parameters={"x": 5}, flow=flows.arithmetic_flow)
        assert isolated.result(flow_run_id, "add") == 7

    def test_data_and_parameters_together_are_refused(self, isolated: LocalBackend) -> None:
        with pytest.raises(TypeError, match="data or as parameters"):
            isolated.run_and_return({"x": 1}, parameters={"x": 1}, flow=flows.arithmetic_flow)

    def test_data_that_is_not_a_mapping_is_refused_by_name(self, isolated: LocalBackend) -> None:
        with pytest.raises(TypeError, match="^data must be a mapping"):
            isolated.run([1, 2], flow=flows.arithmetic_flow)

    def test_a_flow_that_is_not_a_prefect_flow_is_refused(self, isolated: LocalBackend) -> None:
        with pytest.raises(TypeError, match="flow must be a Prefect 1 Flow, not function"):
            isolated.run({}, flow=lambda: None)

    def test_flow_id_is_refused(self, isolated: LocalBackend) -> None:
        with pytest.raises(TypeError, match="flow="):
            isolated.run({}, flow_id="abc")


class TestRunConfigArguments:
    def test_keyword_arguments_build_a_local_run_config(self, isolated: LocalBackend, tmp_path) -> None:
        flow_run_id = isolated.submit(
            {"name": "LUME_X"}, flow=flows.environment_flow, labels=["a", "b"], env={"LUME_X": "1"}, working_dir=tmp_path
        )
        config = isolated.get_run_config(flow_run_id)
        assert isinstance(config, LocalRunConfig)
        assert (config.labels, config.env, config.working_dir) == (["a", "b"], {"LUME_X": "1"}, str(tmp_path))
        assert isolated.result(flow_run_id, "read_env") == "1"

    def test_run_config_and_keyword_arguments_warn_and_use_run_config(self, isolated: LocalBackend) -> None:
        config = LocalRunConfig(env={"LUME_X": "from-config"})
        with pytest.warns(UserWarning, match="run_config"):
            value = isolated.run_and_return(
                {"name": "LUME_X"}, config, "read_env", flow=flows.environment_flow, env={"LUME_X": "kwargs"}
            )
        assert value == "from-config"

    def test_invalid_run_config_raises_validation_error_before_running(self, isolated: LocalBackend, tmp_path) -> None:
        with pytest.raises(pydantic.ValidationError, match="working_dir"):
            isolated.run({}, flow=flows.arithmetic_flow, working_dir=str(tmp_path / "missing"))
        with pytest.raises(pydantic.ValidationError, match="no_such_key"):
            isolated.run({}, flow=flows.arithmetic_flow, no_such_key="python:3.11")
        assert isolated._stats()["workers_started"] == 0  # nothing ran


class TestServerOperations:
    @pytest.mark.parametrize(
        "call",
        [
            lambda b: b.create_project("p"),
            lambda b: b.register_flow(flows.arithmetic_flow, "p"),
            lambda b: b.load_flow("arithmetic", "p"),
        ],
        ids=["create_project", "register_flow", "load_flow"],
    )
    def test_server_operations_raise_local_backend_error(self, call) -> None:
        backend = LocalBackend(max_workers=1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(LocalBackendError, match="Prefect Server"):
                call(backend)
        backend.close()


class TestConstruction:
    @pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
    def test_max_workers_must_be_a_positive_integer(self, bad) -> None:
        with pytest.raises(ValueError, match="max_workers"):
            LocalBackend(max_workers=bad)

    def test_fork_is_refused_with_the_reason(self) -> None:
        with pytest.raises(ValueError, match="fork is unsafe"):
            LocalBackend(start_method="fork")

    def test_isolated_must_be_a_bool(self) -> None:
        with pytest.raises(TypeError, match="isolated"):
            LocalBackend(isolated="no")  # type: ignore[arg-type]

    def test_default_is_isolated_with_one_worker_per_core(self) -> None:
        backend = LocalBackend()
        assert backend.isolated and backend.capabilities.isolation
        assert backend.max_workers >= 1
        assert not backend.capabilities.server
        assert backend.start_method in ("forkserver", "spawn")
        backend.close()
        in_process = LocalBackend(isolated=False)
        assert not in_process.capabilities.isolation and in_process.start_method is None
        in_process.close()
