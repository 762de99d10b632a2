"""SchedulingService: every use-case reaches the backend as asked, and the
rules of the port hold through it."""

from __future__ import annotations

from datetime import timedelta

import pydantic
import pytest

from lume_scheduling.adapters.in_memory import Call, InMemoryBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.application import SchedulingService
from lume_scheduling.domain import FlowRunState, RunConfig


class TestConstruction:
    def test_needs_a_backend(self) -> None:
        with pytest.raises(TypeError, match="backend must be a Backend"):
            SchedulingService(object())  # type: ignore[arg-type]

    def test_exposes_the_backend_and_its_capabilities(self, backend: InMemoryBackend) -> None:
        service = SchedulingService(backend)
        assert service.backend is backend
        assert service.capabilities == backend.capabilities
        assert "InMemoryBackend" in repr(service)


class TestServerOperationsDelegate:
    def test_create_register_and_load(
        self, service: SchedulingService, backend: InMemoryBackend
    ) -> None:
        service.create_project("lume")
        flow_id = service.register_flow(
            flows.arithmetic_flow, "lume", "ghcr.io/slac/lume:1", ["gpu"], idempotency_key="k1"
        )
        loaded = service.load_flow("arithmetic", "lume")
        assert loaded == {"flow_id": flow_id, "flow": flows.arithmetic_flow}
        assert backend.calls == [
            Call("create_project", {"project_name": "lume"}),
            Call(
                "register_flow",
                {
                    "flow": flows.arithmetic_flow,
                    "project_name": "lume",
                    "image": "ghcr.io/slac/lume:1",
                    "labels": ["gpu"],
                    "idempotency_key": "k1",
                },
            ),
            Call("load_flow", {"flow_name": "arithmetic", "project_name": "lume"}),
        ]
        (version,) = backend.flow_versions("arithmetic", "lume")
        assert version.options["image"] == "ghcr.io/slac/lume:1"
        assert version.options["labels"] == ["gpu"]


class TestRunsDelegate:
    @pytest.fixture
    def flow_id(self, service: SchedulingService, backend: InMemoryBackend) -> str:
        service.create_project("lume")
        flow_id = service.register_flow(flows.arithmetic_flow, "lume")
        backend.clear_calls()
        return flow_id

    def test_run_and_return(
        self, service: SchedulingService, backend: InMemoryBackend, flow_id: str
    ) -> None:
        assert (
            service.run_and_return({"x": 5, "y": 7}, None, "add", flow_id=flow_id, timeout=5) == 12
        )
        assert backend.calls == [
            Call(
                "run_and_return",
                {
                    "parameters": {"x": 5, "y": 7},
                    "run_config": None,
                    "task_name": "add",
                    "flow_id": flow_id,
                    "timeout": 5,
                },
            )
        ]

    def test_run_passes_run_config_fields(
        self, service: SchedulingService, backend: InMemoryBackend, flow_id: str
    ) -> None:
        flow_run_id = service.run({"x": 2}, flow_id=flow_id, labels=["lume", "gpu"])
        assert backend.calls == [
            Call(
                "run",
                {
                    "parameters": {"x": 2},
                    "run_config": None,
                    "flow_id": flow_id,
                    "labels": ["lume", "gpu"],
                },
            )
        ]
        (request,) = backend.submitted
        assert request.run_config == RunConfig(labels=["lume", "gpu"])
        assert request.parameters == {"x": 2}
        assert service.result(flow_run_id, "add") == 4

    def test_lifecycle(
        self, service: SchedulingService, backend: InMemoryBackend, flow_id: str
    ) -> None:
        flow_run_id = service.submit({"x": 3}, flow_id=flow_id)
        assert service.get_state(flow_run_id) is FlowRunState.SUCCESS
        assert service.wait(flow_run_id, timedelta(seconds=1)) is FlowRunState.SUCCESS
        assert service.get_result(flow_run_id, timeout=1).values["multiply-1"] == 6
        assert service.result(flow_run_id, "add", timeout=1) == 5
        assert service.cancel(flow_run_id) is False
        assert backend.operations == [
            "submit",
            "get_state",
            "wait",
            "get_result",
            "result",
            "cancel",
        ]
        assert backend.calls[2] == Call(
            "wait", {"flow_run_id": flow_run_id, "timeout": timedelta(seconds=1)}
        )
        assert backend.calls[3] == Call("get_result", {"flow_run_id": flow_run_id, "timeout": 1})
        assert backend.calls[4] == Call(
            "result", {"flow_run_id": flow_run_id, "task_name": "add", "timeout": 1}
        )

    def test_only_what_the_caller_asked_is_recorded(
        self, service: SchedulingService, backend: InMemoryBackend, flow_id: str
    ) -> None:
        # run_and_return waits, reads the result and selects inside the port:
        # that is not a call the service made.
        service.run_and_return({}, task_name="add", flow_id=flow_id)
        assert backend.operations == ["run_and_return"]


class TestRunConfigRules:
    def test_both_run_config_and_keyword_arguments_warn_and_use_run_config(
        self, local_backend: InMemoryBackend
    ) -> None:
        service = SchedulingService(local_backend)
        chosen = RunConfig(labels=["chosen"])
        with pytest.warns(UserWarning, match=r"both run_config and keyword arguments \(labels\)"):
            result = service.run_and_return(
                {"x": 1, "y": 1}, chosen, "add", flow=flows.arithmetic_flow, labels=["ignored"]
            )
        assert result == 2
        (request,) = local_backend.submitted
        assert request.run_config is chosen

    def test_the_warning_names_the_callers_line(self, local_backend: InMemoryBackend) -> None:
        # Neither the service nor the fake's own layer is named: the caller is.
        service = SchedulingService(local_backend)
        for call in (
            lambda: service.run({}, RunConfig(), flow=flows.empty_flow, labels=["x"]),
            lambda: local_backend.run({}, RunConfig(), flow=flows.empty_flow, labels=["x"]),
            lambda: local_backend.submit({}, RunConfig(), flow=flows.empty_flow, labels=["x"]),
        ):
            with pytest.warns(UserWarning) as record:
                call()
            assert [warning.filename for warning in record] == [__file__]

    def test_keyword_arguments_alone_do_not_warn(
        self, local_backend: InMemoryBackend, recwarn: pytest.WarningsRecorder
    ) -> None:
        SchedulingService(local_backend).run({}, flow=flows.arithmetic_flow, labels=["a"])
        assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
        (request,) = local_backend.submitted
        assert request.run_config.labels == ["a"]

    def test_invalid_run_config_reaches_no_run(self, local_backend: InMemoryBackend) -> None:
        service = SchedulingService(local_backend)
        with pytest.raises(pydantic.ValidationError, match="label 0 is empty"):
            service.run_and_return({}, flow=flows.arithmetic_flow, labels=[""])
        assert local_backend.submitted == []
        assert local_backend.flow_run_ids == []
        assert local_backend.operations == ["run_and_return"]
