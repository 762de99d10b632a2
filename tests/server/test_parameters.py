"""Parameters checked by the server backends before a flow run is created.

A real Prefect Server accepts names a flow does not declare (they are kept on
the run and ignored) and reports missing required ones as a Python set, and the
emulator does the same (``api/runs.py``), so these tests show the check is ours:
no flow run is created on the server.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from lume_scheduling.adapters.server import DockerBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowParameterError

PROJECT = sys.modules[next(name for name in sys.modules if name.endswith("server.conftest"))].PROJECT


def _runs(emulator: Any) -> int:
    with emulator.store.lock:
        return len(emulator.store.tables["flow_run"])


class TestUnknownAndMissingParameters:
    def test_an_unknown_name_is_refused_and_no_run_is_created(self, backend: Any) -> None:
        flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
        with pytest.raises(FlowParameterError) as raised:
            backend.run({"x": 1, "nope": 2, "other": 3}, flow_id=flow_id)
        assert raised.value.unknown == ("nope", "other")
        assert str(raised.value) == (
            "flow 'arithmetic' has no parameters 'nope', 'other'; its parameters are: x (default 1), y (default 2)"
        )

    def test_the_server_itself_would_have_taken_the_unknown_name(self, emulator: Any, docker: DockerBackend) -> None:
        flow_id = docker.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
        before = _runs(emulator)
        with pytest.raises(FlowParameterError):
            docker.submit({"nope": 1}, flow_id=flow_id)
        assert _runs(emulator) == before
        # The same run asked of the server itself is created: the check is ours.
        emulator.server.rules.create_flow_run(flow_id=flow_id, parameters={"nope": 1}, labels=["no-agent-has-this"])
        assert _runs(emulator) == before + 1

    def test_a_missing_required_parameter_is_refused_before_the_server_sees_it(
        self, emulator: Any, docker: DockerBackend
    ) -> None:
        flow_id = docker.register_flow(flows.required_flow, PROJECT, no_url=True)
        before = _runs(emulator)
        with pytest.raises(FlowParameterError) as raised:
            docker.run_and_return({"scale": 2}, task_name="multiply", flow_id=flow_id)
        assert raised.value.missing == ("x",)
        assert "needs parameter 'x'; its parameters are: scale (default 1), x (required)" in str(raised.value)
        assert _runs(emulator) == before
        assert docker.run_and_return({"x": 3, "scale": 2}, task_name="multiply", flow_id=flow_id, timeout=30) == 12

    def test_the_flow_groups_default_parameters_supply_a_required_one(
        self, emulator: Any, docker: DockerBackend
    ) -> None:
        flow_id = docker.register_flow(flows.required_flow, PROJECT, no_url=True)
        group = emulator.store.tables["flow"][flow_id]["flow_group_id"]
        emulator.store.update("flow_group", group, default_parameters={"x": 5})
        assert docker.run_and_return({}, task_name="multiply", flow_id=flow_id, timeout=30) == 10
        # Read afresh each time: the defaults can change between runs.
        emulator.store.update("flow_group", group, default_parameters={})
        with pytest.raises(FlowParameterError, match="needs parameter 'x'"):
            docker.run({}, flow_id=flow_id)


class TestParametersOfFlowsRegisteredElsewhere:
    def test_they_are_read_from_the_server_once_per_flow_id(self, emulator: Any, docker: DockerBackend) -> None:
        flow_id = docker.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
        with DockerBackend(emulator.config()) as other:
            with pytest.raises(FlowParameterError, match="has no parameter 'z'; its parameters are: x"):
                other.run({"z": 1}, flow_id=flow_id)
            sent = other.requests_sent
            with pytest.raises(FlowParameterError):
                other.run({"z": 1}, flow_id=flow_id)
            assert other.requests_sent == sent, "the flow's parameters were read again"
            assert other.run_and_return({"x": 4}, task_name="add", flow_id=flow_id, timeout=30) == 6

    def test_a_loaded_flow_is_checked_with_the_parameters_it_was_registered_with(
        self, emulator: Any, docker: DockerBackend
    ) -> None:
        docker.register_flow(flows.required_flow, PROJECT, no_url=True)
        with DockerBackend(emulator.config()) as other:
            loaded = other.load_flow("required", PROJECT)
            sent = other.requests_sent
            with pytest.raises(FlowParameterError, match="needs parameter 'x'"):
                other.run({}, flow_id=loaded["flow_id"])
            # Known from load_flow; only the flow group's defaults were asked for.
            assert other.requests_sent == sent + 1
