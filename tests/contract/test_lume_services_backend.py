"""A custom backend written to lume-services' ``Backend`` interface keeps working.

`InProcessBackend` is written the way lume-services' documentation tells an
application to write one: subclass ``Backend`` (a pydantic model), implement its
five methods with their documented signatures, build the run config from keyword
arguments, call ``run_config.build()``, raise the documented errors. The only
change from code written against lume-services is where ``Backend``,
``LocalRunConfig`` (``lume_scheduling.adapters.lume_services``) and the errors
(``lume_scheduling.domain``) are imported from. It runs flows in this process
with Prefect's own ``flow.run()``.

It runs through `SchedulingService` and through the parts of the contract suite
that apply to it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pydantic
import pytest
from prefect import Flow
from prefect.engine import state as prefect_state

from lume_scheduling.adapters.lume_services import Backend, LocalRunConfig
from lume_scheduling.adapters.testing import flows
from lume_scheduling.adapters.testing.contract import BackendContractSuite
from lume_scheduling.application import BackendCapabilities, SchedulingService
from lume_scheduling.domain import (
    BackendUnavailableError,
    EmptyResultError,
    FlowFailedError,
    FlowParameterError,
    FlowRunCancelledError,
    FlowRunState,
    LocalBackendError,
    TaskNotCompletedError,
    TaskNotInFlowError,
)


class InProcessBackend(Backend):
    """Runs flows in this process. Server operations raise `LocalBackendError`.

    Attributes:
        project_name: The project named in errors (there are no projects here).
    """

    project_name: str = "local"

    def create_project(self, project_name: str) -> None:
        raise LocalBackendError()

    def register_flow(self, flow: Flow, project_name: str, image: Optional[str] = None) -> str:
        raise LocalBackendError()

    def load_flow(self, flow_name: str, project_name: str) -> dict:
        raise LocalBackendError()

    def run(
        self,
        data: Optional[Dict[str, Any]],
        run_config: Optional[LocalRunConfig] = None,
        *,
        flow: Flow,
        **kwargs: Any,
    ) -> None:
        state = self._run_flow(data, run_config, flow, kwargs)
        if not state.is_successful():
            raise self._failure(flow, state)

    def run_and_return(
        self,
        data: Optional[Dict[str, Any]],
        run_config: Optional[LocalRunConfig] = None,
        task_name: Optional[str] = None,
        *,
        flow: Flow,
        **kwargs: Any,
    ) -> Any:
        state = self._run_flow(data, run_config, flow, kwargs)
        if not state.is_successful():
            raise self._failure(flow, state)
        task_states = state.result
        if task_name is None:
            results = {}
            for task, slug in flow.slugs.items():
                if not task_states[task].is_successful():
                    raise TaskNotCompletedError(slug)
                results[slug] = task_states[task].result
            return results
        tasks = flow.get_tasks(name=task_name) or [t for t, slug in flow.slugs.items() if slug == task_name]
        if not tasks:
            raise TaskNotInFlowError(flow.name, self.project_name, task_name)
        results = {}
        for task in tasks:
            slug = flow.slugs[task]
            if not task_states[task].is_successful():
                raise TaskNotCompletedError(slug)
            if task_states[task].result is None:
                raise EmptyResultError(task_slug=slug)
            results[slug] = task_states[task].result
        if len(results) == 1:
            return next(iter(results.values()))
        return results

    def _run_flow(
        self,
        data: Optional[Dict[str, Any]],
        run_config: Optional[LocalRunConfig],
        flow: Flow,
        kwargs: Dict[str, Any],
    ) -> prefect_state.State:
        if run_config is not None and len(kwargs):
            warnings.warn("Both run_config and kwargs passed to run. Flow will execute using passed run_config.")
        if run_config is None:
            run_config = LocalRunConfig(**kwargs)
        flow = flow.copy()  # the caller's flow keeps its own run config
        flow.run_config = run_config.build()
        return flow.run(parameters=data or {})

    @staticmethod
    def _failure(flow: Flow, state: prefect_state.State) -> FlowFailedError:
        for task_state in (state.result or {}).values():
            if task_state.is_failed() and isinstance(task_state.result, BaseException):
                error = task_state.result
                return FlowFailedError(
                    exception_message=str(error), exception_type=type(error).__name__, flow_name=flow.name
                )
        return FlowFailedError(exception_message=str(state.message), flow_name=flow.name)


# Contract tests that call the class's own run()/run_and_return() with what only
# the port promises (lume-services' interface does not): they test the user's
# code, not the base class. What the base class promises instead is tested below.
NOT_APPLICABLE: Dict[str, str] = {
    "test_a_flow_object_as_flow_id_is_a_type_error": "its run() declares flow= only (a Python TypeError)",
    "test_task_name_and_flags_are_checked_before_anything_runs": "its run_and_return() checks task_name itself",
    "test_invalid_run_config_is_rejected_before_anything_runs": "its run() receives a mapping run_config as it is",
    "test_a_field_of_another_run_config_kind_is_ignored_with_a_warning": "its run() builds its own run config",
    "test_a_run_config_of_another_kind_is_not_taken_for_this_one": "its run() receives a mapping run_config as it is",
    "test_keyword_arguments_build_the_backends_run_config": "its run_and_return() builds its own run config",
    "test_run_config_and_keyword_arguments_warn_and_use_run_config": "its run() warns from its own line",
    "test_unknown_task_raises_task_not_in_flow_listing_the_tasks": "lume-services' TaskNotInFlowError lists nothing",
    "test_failing_flow_raises_flow_failed_with_its_cause": "its run_and_return() has no flow run id to report",
    "test_mapped_results_are_addressable": "its run_and_return() gives one value per slug",
    "test_run_returns_an_id_with_server_and_none_without": "its run() does not go through the port's _submit",
    "test_flow_and_flow_id_together_or_neither_are_refused": "its run_and_return() declares flow= only",
    "test_parameters_that_are_not_a_mapping_are_refused": "its run() hands parameters to prefect as they are",
    "test_same_idempotency_key_returns_the_same_flow_id": "lume-services' register_flow has no idempotency_key",
    "test_an_unknown_parameter_is_refused_before_a_run_is_created": (
        "its run() and run_and_return() hand parameters to prefect's flow.run, which refuses them "
        "with its own ValueError (submit is checked by the port: see TestThroughSchedulingService)"
    ),
    "test_a_missing_required_parameter_is_refused_before_a_run_is_created": (
        "its run_and_return() hands parameters to prefect's flow.run, which refuses them with its own ValueError"
    ),
    "test_env_values_are_masked_in_everything_a_failed_run_reports": (
        "its run() and run_and_return() raise their own errors; the port masks only what it hands back"
    ),
}


class TestLumeServicesBackendContract(BackendContractSuite):
    """The contract suite, less `NOT_APPLICABLE`."""

    @pytest.fixture
    def backend(self) -> Iterator[InProcessBackend]:
        with InProcessBackend() as backend:
            yield backend


for _name in NOT_APPLICABLE:
    setattr(TestLumeServicesBackendContract, _name, None)


def test_every_test_left_out_is_a_contract_test() -> None:
    # A renamed contract test must not stay left out by a stale name.
    assert set(NOT_APPLICABLE) <= {name for name in dir(BackendContractSuite) if name.startswith("test_")}
    collected = {name for name in dir(TestLumeServicesBackendContract) if name.startswith("test_")}
    assert {name for name in collected if getattr(TestLumeServicesBackendContract, name) is None} == set(NOT_APPLICABLE)


class TestWrittenToLumeServicesInterface:
    """What `LumeServicesBackend` promises such a class."""

    def test_it_is_instantiated_with_its_pydantic_fields(self) -> None:
        assert InProcessBackend(project_name="sandbox").project_name == "sandbox"
        with pytest.raises(pydantic.ValidationError, match="no_such_setting"):
            InProcessBackend(no_such_setting=1)

    def test_a_class_missing_one_of_the_five_methods_cannot_be_instantiated(self) -> None:
        class Incomplete(Backend):
            def create_project(self, project_name: str) -> None:
                raise LocalBackendError()

        with pytest.raises(TypeError, match="load_flow.*register_flow.*run.*run_and_return"):
            Incomplete()

    def test_it_declares_what_the_derived_lifecycle_can_do(self) -> None:
        with InProcessBackend() as backend:
            assert backend.capabilities == BackendCapabilities(
                server=False, cancel=False, timeout=False, isolation=False
            )

        class WithServer(InProcessBackend):
            server = True

        with WithServer() as backend:
            assert backend.capabilities.server is True
            assert "server" not in WithServer.__fields__

    @pytest.mark.parametrize(
        "operation, arguments",
        [("create_project", ("p",)), ("register_flow", (flows.arithmetic_flow, "p")), ("load_flow", ("f", "p"))],
    )
    def test_a_bare_local_backend_error_gets_the_operations_name(
        self, operation: str, arguments: tuple
    ) -> None:
        with InProcessBackend() as backend:
            with pytest.raises(LocalBackendError) as raised:
                getattr(backend, operation)(*arguments)
        assert raised.value.operation == operation
        assert isinstance(raised.value.__cause__, LocalBackendError)

    def test_its_own_methods_refuse_calls_after_close(self) -> None:
        backend = InProcessBackend()
        backend.close()
        for call in (
            lambda: backend.run({}, flow=flows.arithmetic_flow),
            lambda: backend.run_and_return({}, None, "add", flow=flows.arithmetic_flow),
            lambda: backend.create_project("p"),
        ):
            with pytest.raises(BackendUnavailableError, match="closed"):
                call()


class TestThroughSchedulingService:
    """The calls lume-services' ``Flow`` and ``Model`` make, on this backend."""

    @pytest.fixture
    def service(self) -> Iterator[SchedulingService]:
        with InProcessBackend() as backend:
            yield SchedulingService(backend)

    def test_flow_run_and_return_passes_image_and_gets_the_value(self, service: SchedulingService) -> None:
        # lume-services' Flow.run_and_return on a local backend: image= included.
        with pytest.warns(UserWarning, match="image"):
            value = service.run_and_return(
                parameters={"x": 5, "y": 7},
                flow=flows.arithmetic_flow,
                task_name="add",
                image="ghcr.io/slac-ml/lume-services:1.0",
            )
        assert value == 12

    def test_flow_run_returns_none(self, service: SchedulingService) -> None:
        assert service.run(parameters={"x": 1}, flow=flows.arithmetic_flow) is None
        with pytest.raises(FlowFailedError, match="kaboom"):
            service.run(parameters={}, flow=flows.failing_flow)

    def test_the_lifecycle_is_derived_from_run_and_return(self, service: SchedulingService) -> None:
        with pytest.warns(UserWarning, match="InProcessBackend.submit.. ignores image"):
            flow_run_id = service.submit({"x": 2, "y": 3}, flow=flows.arithmetic_flow, image="python:3.11")
        assert service.get_state(flow_run_id) is FlowRunState.SUCCESS
        assert service.wait(flow_run_id, timeout=0) is FlowRunState.SUCCESS
        assert service.result(flow_run_id, "add") == 5
        assert service.result(flow_run_id, "add_more-1") == 15
        record = service.get_result(flow_run_id)
        assert {run.name for run in record.task_runs} >= {"add", "add_more", "multiply", "x", "y"}
        assert record.flow_name == "arithmetic"
        assert service.cancel(flow_run_id) is False

    def test_a_failed_run_is_recorded_with_its_cause_and_id(self, service: SchedulingService) -> None:
        flow_run_id = service.submit({}, flow=flows.failing_flow)
        assert service.get_state(flow_run_id) is FlowRunState.FAILED
        with pytest.raises(FlowFailedError) as raised:
            service.result(flow_run_id)
        assert raised.value.flow_run_id == flow_run_id
        assert raised.value.exception_type == "ValueError"
        assert "kaboom" in str(raised.value)

    def test_submit_checks_the_run_config_before_running(self, service: SchedulingService) -> None:
        backend = service.backend
        assert isinstance(backend, InProcessBackend)
        for bad in ({"labels": [""]}, {"no_such_key": 1}):
            with pytest.raises(pydantic.ValidationError):
                service.submit({}, flow=flows.arithmetic_flow, **bad)
            with pytest.raises(pydantic.ValidationError):
                service.submit({}, bad, flow=flows.arithmetic_flow)
        assert backend._records == {}

    def test_submit_checks_parameters_before_running(self, service: SchedulingService) -> None:
        backend = service.backend
        assert isinstance(backend, InProcessBackend)
        with pytest.raises(FlowParameterError, match="has no parameter 'nosuch'"):
            service.submit({"x": 1, "nosuch": 2}, flow=flows.arithmetic_flow)
        with pytest.raises(FlowParameterError, match="needs parameter 'x'"):
            service.submit({"scale": 3}, flow=flows.required_flow)
        assert backend._records == {}

    def test_submit_hands_its_run_config_to_run_and_return(self, tmp_path: Any) -> None:
        class Recording(InProcessBackend):
            seen: List[Any] = []

            def run_and_return(self, data: Any, run_config: Any = None, task_name: Any = None, *, flow: Flow, **kwargs: Any) -> Any:  # type: ignore[override]
                self.seen.append((run_config, task_name, kwargs))
                return super().run_and_return(data, run_config, task_name, flow=flow, **kwargs)

        with Recording() as backend:
            flow_run_id = backend.submit({}, flow=flows.environment_flow, working_dir=str(tmp_path), labels=["site"])
            assert backend.get_result(flow_run_id).state is FlowRunState.SUCCESS
        ((run_config, task_name, kwargs),) = backend.seen
        assert type(run_config) is LocalRunConfig
        assert run_config.working_dir == str(tmp_path) and run_config.labels == ["site"]
        assert task_name is None and kwargs == {}
        assert run_config.build().working_dir == str(tmp_path)


class _Answers(InProcessBackend):
    """Its run_and_return answers what the test sets, to exercise the base class."""

    answer: Any = None

    def run_and_return(self, data: Any, run_config: Any = None, task_name: Any = None, *, flow: Flow, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


class TestWhatRunAndReturnGivesBack:
    def test_something_other_than_a_mapping_ends_the_run_failed(self) -> None:
        with _Answers(answer=42) as backend:
            flow_run_id = backend.submit({}, flow=flows.arithmetic_flow)
            with pytest.raises(FlowFailedError, match="returned int, not a mapping"):
                backend.result(flow_run_id)

    def test_a_cancelled_error_ends_the_run_cancelled(self) -> None:
        with _Answers(answer=FlowRunCancelledError(exception_message="stopped")) as backend:
            flow_run_id = backend.submit({}, flow=flows.arithmetic_flow)
            assert backend.get_state(flow_run_id) is FlowRunState.CANCELLED
            with pytest.raises(FlowRunCancelledError):
                backend.result(flow_run_id)

    def test_another_exception_passes_through_submit_and_records_no_run(self) -> None:
        with _Answers(answer=TaskNotCompletedError("explode-1")) as backend:
            with pytest.raises(TaskNotCompletedError):
                backend.submit({}, flow=flows.arithmetic_flow)
            assert backend._records == {}

    def test_with_flow_id_only_task_names_come_from_the_slugs(self) -> None:
        class Remote(Backend):
            server = True
            run_config_type = LocalRunConfig

            def create_project(self, project_name: str) -> None:
                pass

            def register_flow(self, flow: Flow, project_name: str, image: Optional[str] = None) -> str:
                return "flow-1"

            def load_flow(self, flow_name: str, project_name: str) -> dict:
                return {"flow_id": "flow-1", "flow": flows.arithmetic_flow}

            def run(self, parameters: Any, run_config: Any = None, *, flow_id: str, **kwargs: Any) -> str:
                return "remote-run"

            def run_and_return(self, parameters: Any, run_config: Any = None, task_name: Any = None, *, flow_id: str, **kwargs: Any) -> Any:
                return {"add-1": 3, "add_more-1": 13, "tagged-extra-2": "x"}

        with Remote() as backend:
            assert backend.run({}, flow_id="flow-1") == "remote-run"
            flow_run_id = backend.submit({}, flow_id="flow-1")
            assert backend.result(flow_run_id, "add") == 3
            assert backend.result(flow_run_id, "tagged-extra") == "x"
            assert backend.get_result(flow_run_id).flow_id == "flow-1"
            with pytest.raises(TypeError):
                backend.submit({}, flow=flows.arithmetic_flow)


def test_the_readmes_custom_backend_block_runs_as_written() -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = text.index("<!-- chapter: migration -->")
    section = text[start : text.index("<!-- end chapter: migration -->", start)]
    block = next(b for b in re.findall(r"```python\n(.*?)```", section, re.DOTALL) if "class SlurmBackend" in b)
    namespace: Dict[str, Any] = {}
    exec(compile(block, "README custom backend", "exec"), namespace)
    service = namespace["service"]
    assert isinstance(service, SchedulingService)
    assert service.backend.partition == "gpu"
    assert service.capabilities.names() == []
    with pytest.raises(LocalBackendError) as raised:
        service.create_project("p")
    assert raised.value.operation == "create_project"
    service.backend.close()
