"""The backend contract suite: every documented behaviour of the scheduler port,
as pytest tests any `Backend` adapter can run against itself.

An adapter's test module is a few lines::

    import pytest
    from lume_scheduling.adapters.testing.contract import BackendContractSuite

    class TestLocalBackendContract(BackendContractSuite):
        @pytest.fixture
        def backend(self):
            with LocalBackend(max_workers=2) as backend:
                yield backend

The test classes here are mixins whose names do not start with ``Test``, so
pytest collects them only through a ``Test...`` subclass. `BackendFixtures`
declares the fixtures; `BackendContractSuite` combines everything. Optional
fixture overrides:

- ``hanging_flow``: a flow whose run does not end by itself until cancelled or
  timed out (default `flows.hanging_flow`, which sleeps 60 s).
- ``project_name``: the project flows are registered in (server backends).
- ``run_config_fields``: fields every run config needs on this backend (e.g.
  ``{"image": ...}`` for Docker), merged into the run configs the suite builds.

Capabilities, not skips, decide what is checked: a test whose behaviour the
backend does not declare checks what the port promises instead (for example,
without ``server`` the server operations raise `LocalBackendError`). The
capabilities each suite ran with are recorded as a junit property
(``backend_capabilities``) and summarised at the end of the session by
`lume_scheduling.adapters.testing.plugin`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from typing import Any, Callable, Dict, List

import pydantic
import pytest

from lume_scheduling.adapters.testing import flows
from lume_scheduling.application import Backend, BackendCapabilities, FlowRunRequest
from lume_scheduling.application.ports import foreign_run_config_fields
from lume_scheduling.domain import (
    BackendUnavailableError,
    EmptyResultError,
    FlowFailedError,
    FlowNotFoundError,
    FlowParameterError,
    FlowRunCancelledError,
    FlowRunNotFoundError,
    FlowRunResult,
    FlowRunState,
    FlowRunTimeoutError,
    LocalBackendError,
    SchedulingError,
    TaskNotCompletedError,
    TaskNotInFlowError,
)

__all__ = [
    "CAPABILITIES_KEY",
    "BackendContractSuite",
    "ArgumentContract",
    "BackendFixtures",
    "CloseContract",
    "FlowTargets",
    "LifecycleContract",
    "ProjectAndFlowContract",
    "ResultSelectionContract",
    "RunConfigContract",
    "RunContract",
    "RunErrorContract",
    "TimeoutAndCancelContract",
    "DEFAULT_PROJECT_NAME",
    "spy_on_submissions",
]

DEFAULT_PROJECT_NAME = "lume-scheduling-contract"
# How long the suite lets a real backend take to bring a run to an end.
SETTLE_SECONDS = 60.0
# A time-out must return control well before the hanging flow (60 s) would end.
PROMPT_SECONDS = 20.0
SHORT_TIMEOUT = 0.5
# A wait that must run out on a hanging run (nothing else depends on its length).
WAIT_TIMEOUT = 0.2

# config.stash key: {test class qualified name: (backend type, capability names)}.
CAPABILITIES_KEY: "pytest.StashKey[Dict[str, tuple]]" = pytest.StashKey()


class FlowTargets:
    """Turns an example flow into the argument that names it on a backend.

    Backends with ``server``: the flow is registered once (per `FlowTargets`) in
    the project, and ``{"flow_id": id}`` is returned. Without: ``{"flow": flow}``.

    Args:
        backend: The backend under test.
        project_name: The project to register flows in.
    """

    def __init__(self, backend: Backend, project_name: str) -> None:
        self._backend = backend
        self._project_name = project_name
        self._flow_ids: Dict[str, str] = {}
        self._project_created = False

    def __call__(self, flow: Any) -> Dict[str, Any]:
        """``{"flow_id": ...}`` or ``{"flow": ...}`` for ``flow``."""
        if not self._backend.capabilities.server:
            return {"flow": flow}
        return {"flow_id": self.flow_id(flow)}

    def flow_id(self, flow: Any) -> str:
        """Register ``flow`` (once) and return its flow id. Server backends only."""
        if flow.name not in self._flow_ids:
            if not self._project_created:
                self._backend.create_project(self._project_name)
                self._project_created = True
            self._flow_ids[flow.name] = self._backend.register_flow(flow, self._project_name)
        return self._flow_ids[flow.name]


def spy_on_submissions(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> List[FlowRunRequest]:
    """Record every request that reaches ``backend._submit`` until ``monkeypatch`` undoes it.

    The hook is wrapped on the instance, so this holds for any adapter whose
    public methods delegate to the port (as they must).

    Returns:
        The list the requests are appended to, in order.
    """
    seen: List[FlowRunRequest] = []
    submit = backend._submit

    def spy(request: FlowRunRequest) -> str:
        seen.append(request)
        return submit(request)

    try:
        monkeypatch.setattr(backend, "_submit", spy)
    except (ValueError, TypeError, AttributeError):
        # A pydantic model (lume-services' Backend was one) refuses instance
        # attributes: wrap the class's hook, for this instance only.
        hook = type(backend)._submit

        def spy_method(self: Backend, request: FlowRunRequest) -> str:
            if self is backend:
                seen.append(request)
            return hook(self, request)

        monkeypatch.setattr(type(backend), "_submit", spy_method)
    return seen


class BackendFixtures:
    """The fixtures the contract tests use. Subclasses must provide ``backend``."""

    @pytest.fixture
    def backend(self) -> Backend:
        """The backend under test: override it (yield it, then close it)."""
        raise NotImplementedError(
            "a contract suite subclass must define a `backend` fixture that yields "
            "the Backend under test"
        )

    @pytest.fixture
    def project_name(self) -> str:
        """The project flows are registered in, on backends with ``server``."""
        return DEFAULT_PROJECT_NAME

    @pytest.fixture
    def hanging_flow(self) -> Any:
        """A flow whose run does not end until cancelled or timed out."""
        return flows.hanging_flow

    @pytest.fixture
    def run_config_fields(self) -> Dict[str, Any]:
        """Fields a run config of this backend needs, besides labels and env."""
        return {}

    @pytest.fixture
    def capabilities(self, backend: Backend) -> BackendCapabilities:
        """What the backend declares it can do."""
        return backend.capabilities

    @pytest.fixture
    def target(self, backend: Backend, project_name: str) -> FlowTargets:
        """``target(flow)`` -> the ``flow=``/``flow_id=`` argument for ``flow``."""
        return FlowTargets(backend, project_name)

    @pytest.fixture
    def submissions(
        self, backend: Backend, monkeypatch: pytest.MonkeyPatch
    ) -> List[FlowRunRequest]:
        """Every request that reached the adapter's ``_submit`` hook during the test."""
        return spy_on_submissions(backend, monkeypatch)

    @pytest.fixture(autouse=True)
    def _report_capabilities(
        self,
        request: pytest.FixtureRequest,
        capabilities: BackendCapabilities,
        backend: Backend,
        record_property: Callable[[str, object], None],
    ) -> None:
        names = capabilities.names()
        record_property("backend_capabilities", ",".join(names) or "none")
        owner = request.cls.__qualname__ if request.cls else request.node.nodeid
        request.config.stash.setdefault(CAPABILITIES_KEY, {})[owner] = (
            type(backend).__name__,
            tuple(names),
        )


def _refused_without_server(backend: Backend, operation: str, *args: Any, **kwargs: Any) -> bool:
    """Without ``server``, check that the server operation raises `LocalBackendError`
    naming itself, and return True (the test has nothing more to check). With
    ``server``, return False."""
    if backend.capabilities.server:
        return False
    with pytest.raises(LocalBackendError) as raised:
        getattr(backend, operation)(*args, **kwargs)
    assert raised.value.operation == operation
    return True


def _unknown_id() -> str:
    return str(uuid.uuid4())


def _assert_still_going(backend: Backend, flow_run_id: str) -> None:
    state = backend.get_state(flow_run_id)
    assert not state.is_final, f"the hanging flow's run {flow_run_id} has ended: {state}"


def _assert_cancels(backend: Backend, flow_run_id: str) -> None:
    stopped = backend.cancel(flow_run_id)
    state = backend.get_state(flow_run_id)
    assert stopped is True, f"cancel({flow_run_id!r}) returned {stopped!r}; its state is {state}"


def _settle(backend: Backend, flow_run_id: str) -> FlowRunState:
    """Wait (boundedly) for a run to end and return its final state."""
    return backend.wait(flow_run_id, timeout=SETTLE_SECONDS)


# A valid value for each field the suite passes to a backend of another kind.
_FOREIGN_VALUES: Dict[str, Callable[[], Any]] = {
    "image": lambda: "ghcr.io/slac-ml/lume-services:1.0",
    "working_dir": os.getcwd,
    "ports": lambda: [8080],
}


def _a_foreign_field(backend: Backend) -> Dict[str, Any]:
    """``{name: value}`` of one field of another kind of run config than the
    backend's (``image`` if it can), or ``{}`` if there is none."""
    foreign = foreign_run_config_fields(backend.run_config_type, _FOREIGN_VALUES)
    for name, value in _FOREIGN_VALUES.items():
        if name in foreign:
            return {name: value()}
    return {}


class ProjectAndFlowContract(BackendFixtures):
    """Projects and flow registration (``server``); `LocalBackendError` without."""

    def test_create_project_is_idempotent(self, backend: Backend, project_name: str) -> None:
        if _refused_without_server(backend, "create_project", project_name):
            return
        backend.create_project(project_name)
        backend.create_project(project_name)  # a second time is not an error
        assert backend.register_flow(flows.arithmetic_flow, project_name)

    def test_project_names_are_checked(self, backend: Backend) -> None:
        unknown = f"no-such-project-{uuid.uuid4()}"
        if _refused_without_server(backend, "register_flow", flows.arithmetic_flow, unknown):
            return
        with pytest.raises(ValueError, match="project_name"):
            backend.create_project("")
        with pytest.raises(ValueError, match="project_name"):
            backend.register_flow(flows.arithmetic_flow, " ")
        # The port documents ValueError for a project the server does not know.
        with pytest.raises(ValueError):
            backend.register_flow(flows.arithmetic_flow, unknown)

    def test_register_then_load_round_trip(self, backend: Backend, project_name: str) -> None:
        if _refused_without_server(backend, "load_flow", "arithmetic", project_name):
            return
        backend.create_project(project_name)
        flow_id = backend.register_flow(flows.arithmetic_flow, project_name)
        loaded = backend.load_flow("arithmetic", project_name)
        assert set(loaded) == {"flow_id", "flow"}
        assert loaded["flow_id"] == flow_id
        assert loaded["flow"].name == "arithmetic"
        assert backend.run_and_return({"x": 5, "y": 7}, task_name="add", flow_id=flow_id) == 12

    def test_registering_again_makes_a_new_version(
        self, backend: Backend, project_name: str
    ) -> None:
        if _refused_without_server(backend, "register_flow", flows.twin_flow, project_name):
            return
        backend.create_project(project_name)
        first = backend.register_flow(flows.twin_flow, project_name)
        second = backend.register_flow(flows.twin_flow, project_name)
        assert first != second
        assert backend.load_flow("twin", project_name)["flow_id"] == second

    def test_same_idempotency_key_returns_the_same_flow_id(
        self, backend: Backend, project_name: str
    ) -> None:
        key = f"contract-{uuid.uuid4()}"
        if _refused_without_server(
            backend, "register_flow", flows.empty_flow, project_name, idempotency_key=key
        ):
            return
        backend.create_project(project_name)
        first = backend.register_flow(flows.empty_flow, project_name, idempotency_key=key)
        again = backend.register_flow(flows.empty_flow, project_name, idempotency_key=key)
        other = backend.register_flow(flows.empty_flow, project_name, idempotency_key=key + "-2")
        assert again == first
        assert other != first
        assert backend.load_flow("empty", project_name)["flow_id"] == other

    def test_load_of_an_unknown_flow_raises_flow_not_found(
        self, backend: Backend, project_name: str
    ) -> None:
        name = f"no-such-flow-{uuid.uuid4()}"
        if _refused_without_server(backend, "load_flow", name, project_name):
            return
        backend.create_project(project_name)
        with pytest.raises(FlowNotFoundError) as raised:
            backend.load_flow(name, project_name)
        assert raised.value.flow_name == name

    def test_run_of_an_unknown_flow_id_raises_flow_not_found(self, backend: Backend) -> None:
        flow_id = _unknown_id()
        if not backend.capabilities.server:
            # Without a server there are no flow ids: the argument itself is wrong.
            with pytest.raises(TypeError):
                backend.run_and_return({}, flow_id=flow_id)
            return
        with pytest.raises(FlowNotFoundError) as raised:
            backend.run_and_return({}, flow_id=flow_id)
        assert raised.value.flow_id == flow_id


class RunContract(BackendFixtures):
    """``run``: an id at once with ``server``; without, it waits and returns None."""

    def test_run_returns_an_id_with_server_and_none_without(
        self, backend: Backend, target: FlowTargets, submissions: List[FlowRunRequest]
    ) -> None:
        returned = backend.run({"x": 5, "y": 7}, **target(flows.arithmetic_flow))
        assert len(submissions) == 1
        if not backend.capabilities.server:
            assert returned is None
            return
        assert isinstance(returned, str) and returned
        assert _settle(backend, returned) is FlowRunState.SUCCESS
        assert backend.result(returned, "add") == 12

    def test_run_of_a_failing_flow(self, backend: Backend, target: FlowTargets) -> None:
        if not backend.capabilities.server:
            with pytest.raises(FlowFailedError) as raised:
                backend.run({}, **target(flows.failing_flow))
            assert raised.value.exception_type == "ValueError"
            assert "kaboom" in (raised.value.exception_message or "")
            return
        flow_run_id = backend.run({}, **target(flows.failing_flow))
        assert isinstance(flow_run_id, str)
        assert _settle(backend, flow_run_id) is FlowRunState.FAILED
        with pytest.raises(FlowFailedError):
            backend.result(flow_run_id)

    def test_flow_and_flow_id_together_or_neither_are_refused(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        with pytest.raises(TypeError):
            backend.run_and_return({}, flow=flows.arithmetic_flow, flow_id=_unknown_id())
        with pytest.raises(TypeError):
            backend.run_and_return({})
        with pytest.raises(TypeError):
            backend.submit({})

    def test_parameters_that_are_not_a_mapping_are_refused(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        # The local backend names this argument `data`, as the seed does.
        with pytest.raises(TypeError, match="must be a mapping"):
            backend.run_and_return([("x", 1)], **target(flows.arithmetic_flow))  # type: ignore[arg-type]


class ResultSelectionContract(BackendFixtures):
    """``run_and_return``'s three result shapes and the task selection rule."""

    def test_one_task_named_returns_its_value(self, backend: Backend, target: FlowTargets) -> None:
        # "add" must not pick "add_more" (13): names match exactly.
        assert backend.run_and_return({}, task_name="add", **target(flows.arithmetic_flow)) == 3

    def test_several_tasks_with_the_name_return_a_mapping_by_slug(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        result = backend.run_and_return({}, task_name="double", **target(flows.twin_flow))
        assert result == {"double-1": 6, "double-2": 12}

    def test_no_task_named_returns_every_task_by_slug(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        result = backend.run_and_return({}, **target(flows.arithmetic_flow))
        assert isinstance(result, dict)
        assert {slug: result.get(slug) for slug in ("add-1", "add_more-1", "multiply-1")} == {
            "add-1": 3,
            "add_more-1": 13,
            "multiply-1": 2,
        }

    def test_a_slug_selects_its_task(self, backend: Backend, target: FlowTargets) -> None:
        assert (
            backend.run_and_return({}, task_name="add_more-1", **target(flows.arithmetic_flow))
            == 13
        )

    def test_parameters_reach_the_flow(self, backend: Backend, target: FlowTargets) -> None:
        assert (
            backend.run_and_return(
                {"x": 5, "y": 7}, task_name="add", **target(flows.arithmetic_flow)
            )
            == 12
        )
        assert (
            backend.run_and_return({"x": 4}, task_name="double-2", **target(flows.twin_flow)) == 16
        )

    def test_mapped_results_are_addressable(self, backend: Backend, target: FlowTargets) -> None:
        flow_run_id = backend.submit({}, **target(flows.mapped_flow))
        record = backend.get_result(flow_run_id, timeout=SETTLE_SECONDS)
        assert record.mapped_value("square-1", 2) == 9
        assert record.mapped_value("square-1", 0) == 1
        assert backend.result(flow_run_id, "square") == [1, 4, 9]
        with pytest.raises(TaskNotInFlowError):
            record.mapped_value("square-1", 3)
        assert backend.run_and_return(
            {"values": [2, 5]}, task_name="square", **target(flows.mapped_flow)
        ) == [4, 25]


class RunErrorContract(BackendFixtures):
    """Every error a run reports, with what it is about."""

    def test_unknown_task_raises_task_not_in_flow_listing_the_tasks(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        with pytest.raises(TaskNotInFlowError) as raised:
            backend.run_and_return({}, task_name="subtract", **target(flows.arithmetic_flow))
        assert raised.value.task_name == "subtract"
        assert {"add", "add_more", "multiply"} <= set(raised.value.available)
        assert "add" in str(raised.value)

    def test_task_that_failed_raises_task_not_completed(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        flow = target(flows.partly_failing_flow)
        with pytest.raises(TaskNotCompletedError) as raised:
            backend.run_and_return({}, task_name="explode", **flow)
        assert raised.value.task_slug == "explode-1"
        # The run itself succeeded: another task's value is there.
        assert backend.run_and_return({}, task_name="tidy_up", **flow) == "tidied"

    def test_task_without_a_value_raises_empty_result(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        with pytest.raises(EmptyResultError) as raised:
            backend.run_and_return({}, task_name="nothing", **target(flows.empty_flow))
        assert raised.value.task_slug == "nothing-1"

    def test_failing_flow_raises_flow_failed_with_its_cause(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        with pytest.raises(FlowFailedError) as raised:
            backend.run_and_return({}, task_name="explode", **target(flows.failing_flow))
        error = raised.value
        assert not isinstance(error, FlowRunCancelledError)
        assert error.flow_name == "failing"
        assert error.flow_run_id
        assert error.exception_type == "ValueError"
        assert "kaboom" in (error.exception_message or "")
        assert "kaboom" in str(error)

    def test_failed_run_reports_its_id_state_and_cause(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        flow_run_id = backend.submit({"message": "kaboom"}, **target(flows.failing_flow))
        assert _settle(backend, flow_run_id) is FlowRunState.FAILED
        record = backend.get_result(flow_run_id)
        assert record.flow_run_id == flow_run_id
        assert record.state is FlowRunState.FAILED
        with pytest.raises(FlowFailedError) as raised:
            backend.result(flow_run_id)
        assert raised.value.flow_run_id == flow_run_id
        assert raised.value.exception_type == "ValueError"

    def test_env_values_are_masked_in_everything_a_failed_run_reports(
        self, backend: Backend, target: FlowTargets, run_config_fields: Dict[str, Any]
    ) -> None:
        secret = f"token-{uuid.uuid4()}"
        flow = target(flows.failing_flow)
        # The task's exception quotes the value (here through a parameter, so
        # that a backend that does not apply env is checked too).
        parameters = {"message": f"the token {secret} was refused"}
        env = {"TOKEN": secret, "SHORT": "on"}
        with pytest.raises(FlowFailedError) as raised:
            backend.run_and_return(parameters, env=env, **flow, **run_config_fields)
        errors = [raised.value]
        if not backend.capabilities.server:
            with pytest.raises(FlowFailedError) as again:
                backend.run(parameters, env=env, **flow, **run_config_fields)
            errors.append(again.value)
        for error in errors:
            for text in (str(error), repr(error), error.exception_message or ""):
                assert secret not in text, text
            assert "the token ********** was refused" in str(error)
        flow_run_id = raised.value.flow_run_id
        assert flow_run_id is not None
        with pytest.raises(FlowFailedError) as from_result:
            backend.result(flow_run_id)
        assert secret not in str(from_result.value)
        record = backend.get_result(flow_run_id)
        messages = [record.message or ""] + [run.message or "" for run in record.task_runs]
        assert all(secret not in message for message in messages), messages
        assert any("**********" in message for message in messages)

    @pytest.mark.parametrize("operation", ["run", "run_and_return", "submit"])
    def test_an_unknown_parameter_is_refused_before_a_run_is_created(
        self,
        backend: Backend,
        target: FlowTargets,
        submissions: List[FlowRunRequest],
        operation: str,
    ) -> None:
        flow = target(flows.arithmetic_flow)
        with pytest.raises(FlowParameterError) as raised:
            getattr(backend, operation)({"x": 1, "nosuch": 2}, **flow)
        error = raised.value
        assert isinstance(error, ValueError)
        assert (error.unknown, error.missing) == (("nosuch",), ())
        assert [(p.name, p.required, p.default) for p in error.parameters] == [("x", False, 1), ("y", False, 2)]
        assert str(error) == (
            "flow 'arithmetic' has no parameter 'nosuch'; its parameters are: x (default 1), y (default 2)"
        )
        assert submissions == [], "a run was created with a parameter the flow does not declare"

    def test_a_missing_required_parameter_is_refused_before_a_run_is_created(
        self, backend: Backend, target: FlowTargets, submissions: List[FlowRunRequest]
    ) -> None:
        flow = target(flows.required_flow)
        with pytest.raises(FlowParameterError) as raised:
            backend.run_and_return({"scale": 3}, task_name="multiply", **flow)
        assert (raised.value.unknown, raised.value.missing) == ((), ("x",))
        assert "needs parameter 'x'; its parameters are: scale (default 1), x (required)" in str(raised.value)
        assert submissions == [], "a run was created without a required parameter"
        assert backend.run_and_return({"x": 2, "scale": 3}, task_name="multiply", **flow) == 12

    @pytest.mark.parametrize("operation", ["get_state", "wait", "result", "get_result", "cancel"])
    def test_unknown_flow_run_id_raises_flow_run_not_found(
        self, backend: Backend, operation: str
    ) -> None:
        flow_run_id = _unknown_id()
        with pytest.raises(FlowRunNotFoundError) as raised:
            getattr(backend, operation)(flow_run_id)
        assert raised.value.flow_run_id == flow_run_id

    def test_bad_time_outs_and_empty_ids_are_refused_by_name(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        flow_run_id = backend.submit({}, **target(flows.arithmetic_flow))
        with pytest.raises(ValueError, match="timeout"):
            backend.wait(flow_run_id, timeout=-1)
        with pytest.raises(TypeError, match="timeout"):
            backend.wait(flow_run_id, timeout="soon")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="flow_run_id"):
            backend.get_state("")
        assert _settle(backend, flow_run_id) is FlowRunState.SUCCESS


class LifecycleContract(BackendFixtures):
    """submit -> get_state -> wait -> result, on any backend."""

    def test_submit_wait_and_result(self, backend: Backend, target: FlowTargets) -> None:
        flow = target(flows.arithmetic_flow)
        flow_run_id = backend.submit({"x": 2, "y": 3}, **flow)
        assert isinstance(flow_run_id, str) and flow_run_id
        assert isinstance(backend.get_state(flow_run_id), FlowRunState)
        assert backend.wait(flow_run_id, timeout=SETTLE_SECONDS) is FlowRunState.SUCCESS
        assert backend.get_state(flow_run_id) is FlowRunState.SUCCESS
        assert backend.result(flow_run_id, "add") == 5
        assert backend.result(flow_run_id, "multiply") == 6
        record = backend.get_result(flow_run_id)
        assert isinstance(record, FlowRunResult)
        assert record.flow_run_id == flow_run_id
        assert record.state is FlowRunState.SUCCESS
        assert record.values["add_more-1"] == 15
        assert record.flow_name == "arithmetic"
        assert record.flow_id == flow.get("flow_id")

    def test_wait_with_a_time_out_returns_the_final_state_of_a_finished_run(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        flow_run_id = backend.submit({}, **target(flows.arithmetic_flow))
        assert _settle(backend, flow_run_id) is FlowRunState.SUCCESS
        assert backend.wait(flow_run_id, timeout=0) is FlowRunState.SUCCESS

    def test_cancel_of_a_finished_run_returns_false(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        flow_run_id = backend.submit({}, **target(flows.arithmetic_flow))
        assert _settle(backend, flow_run_id) is FlowRunState.SUCCESS
        assert backend.cancel(flow_run_id) is False
        assert backend.get_state(flow_run_id) is FlowRunState.SUCCESS
        assert backend.result(flow_run_id, "add") == 3

    def test_runs_from_several_threads_keep_their_own_results(
        self, backend: Backend, target: FlowTargets
    ) -> None:
        flow = target(flows.arithmetic_flow)  # registered once, before the threads
        results: Dict[int, Any] = {}
        errors: List[BaseException] = []

        def one_run(x: int) -> None:
            try:
                results[x] = backend.run_and_return({"x": x, "y": 1}, task_name="add", **flow)
            except BaseException as err:  # reported below, in the test's thread
                errors.append(err)

        threads = [threading.Thread(target=one_run, args=(x,)) for x in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SETTLE_SECONDS)
        assert not errors
        assert results == {x: x + 1 for x in range(4)}

    def test_close_is_idempotent(self, backend: Backend, target: FlowTargets) -> None:
        assert backend.run_and_return({}, task_name="add", **target(flows.arithmetic_flow)) == 3
        backend.close()
        backend.close()


class TimeoutAndCancelContract(BackendFixtures):
    """Time-outs (``timeout``) and cancellation (``cancel``) of a hanging run.

    A backend without ``cancel`` must provide a ``hanging_flow`` whose runs end
    by themselves within a few seconds: the suite then waits for them.
    """

    def _end(self, backend: Backend, flow_run_id: str) -> FlowRunState:
        """Stop a hanging run (or, without ``cancel``, let it end) and return its state."""
        if backend.capabilities.cancel:
            _assert_cancels(backend, flow_run_id)
        return _settle(backend, flow_run_id)

    def test_run_and_return_time_out_cancels_the_run(
        self, backend: Backend, target: FlowTargets, hanging_flow: Any
    ) -> None:
        if not backend.capabilities.timeout:
            self._no_timeout_capability(backend, target)
            return
        cancel = backend.capabilities.cancel
        flow = target(hanging_flow)
        started = time.monotonic()
        with pytest.raises(FlowRunTimeoutError) as raised:
            backend.run_and_return({}, timeout=SHORT_TIMEOUT, cancel_on_timeout=cancel, **flow)
        elapsed = time.monotonic() - started
        error = raised.value
        assert isinstance(error, RuntimeError)
        assert elapsed < PROMPT_SECONDS, f"the time-out took {elapsed:.1f} s to return"
        assert isinstance(error.flow_run_id, str) and error.flow_run_id
        assert error.timeout is not None and error.timeout.total_seconds() == SHORT_TIMEOUT
        assert error.flow_id == flow.get("flow_id")
        if cancel:
            assert error.cancelled is True
            assert _settle(backend, error.flow_run_id) is FlowRunState.CANCELLED
            with pytest.raises(FlowRunCancelledError):
                backend.result(error.flow_run_id)
        else:
            assert error.cancelled is False
            _settle(backend, error.flow_run_id)

    def test_time_out_without_cancel_on_timeout_leaves_the_run_going(
        self, backend: Backend, target: FlowTargets, hanging_flow: Any
    ) -> None:
        if not backend.capabilities.timeout:
            self._no_timeout_capability(backend, target)
            return
        with pytest.raises(FlowRunTimeoutError) as raised:
            backend.run_and_return(
                {}, timeout=SHORT_TIMEOUT, cancel_on_timeout=False, **target(hanging_flow)
            )
        flow_run_id = raised.value.flow_run_id
        assert isinstance(flow_run_id, str) and flow_run_id
        assert raised.value.cancelled is False
        _assert_still_going(backend, flow_run_id)
        self._end(backend, flow_run_id)

    def test_wait_time_out_raises_and_does_not_cancel(
        self, backend: Backend, target: FlowTargets, hanging_flow: Any
    ) -> None:
        if not backend.capabilities.timeout:
            self._no_timeout_capability(backend, target)
            return
        flow_run_id = backend.submit({}, **target(hanging_flow))
        started = time.monotonic()
        with pytest.raises(FlowRunTimeoutError) as raised:
            backend.wait(flow_run_id, timeout=WAIT_TIMEOUT)
        assert time.monotonic() - started < PROMPT_SECONDS
        assert raised.value.flow_run_id == flow_run_id
        assert raised.value.cancelled is False
        _assert_still_going(backend, flow_run_id)
        with pytest.raises(FlowRunTimeoutError):
            backend.get_result(flow_run_id, timeout=WAIT_TIMEOUT)
        self._end(backend, flow_run_id)

    def test_cancel_of_a_running_run(
        self, backend: Backend, target: FlowTargets, hanging_flow: Any
    ) -> None:
        if not (backend.capabilities.cancel and backend.capabilities.timeout):
            self._no_cancel_capability(backend, target)
            return
        flow_run_id = backend.submit({}, **target(hanging_flow))
        _assert_still_going(backend, flow_run_id)
        _assert_cancels(backend, flow_run_id)
        assert _settle(backend, flow_run_id) is FlowRunState.CANCELLED
        assert backend.get_state(flow_run_id) is FlowRunState.CANCELLED
        with pytest.raises(FlowRunCancelledError) as raised:
            backend.result(flow_run_id)
        assert isinstance(raised.value, FlowFailedError)
        assert raised.value.flow_run_id == flow_run_id
        assert backend.get_result(flow_run_id).state is FlowRunState.CANCELLED
        # Cancelling again: it has ended, so nothing is stopped.
        assert backend.cancel(flow_run_id) is False

    def _no_timeout_capability(self, backend: Backend, target: FlowTargets) -> None:
        """Without ``timeout``: a time-out is still accepted, and a run that ends
        in time is not reported as timed out."""
        flow_run_id = backend.submit({}, **target(flows.arithmetic_flow))
        assert backend.wait(flow_run_id, timeout=SETTLE_SECONDS) is FlowRunState.SUCCESS
        assert backend.result(flow_run_id, "add", timeout=SETTLE_SECONDS) == 3

    def _no_cancel_capability(self, backend: Backend, target: FlowTargets) -> None:
        """Without ``cancel``: cancelling never claims to have stopped a finished run."""
        flow_run_id = backend.submit({}, **target(flows.arithmetic_flow))
        assert _settle(backend, flow_run_id) is FlowRunState.SUCCESS
        try:
            stopped = backend.cancel(flow_run_id)
        except SchedulingError:
            stopped = False
        assert stopped is False
        assert backend.get_state(flow_run_id) is FlowRunState.SUCCESS


class ArgumentContract(BackendFixtures):
    """Arguments are checked alike on every backend: a wrong type is a
    `TypeError`, an empty name a `ValueError`, each naming the argument."""

    def test_a_flow_object_as_flow_id_is_a_type_error(
        self, backend: Backend, target: FlowTargets, submissions: List[FlowRunRequest]
    ) -> None:
        # lume-services' own test: backend.run(parameters, run_config, flow_id=flow).
        for operation in ("run", "run_and_return", "submit"):
            with pytest.raises(TypeError, match="flow_id"):
                getattr(backend, operation)({}, flow_id=flows.arithmetic_flow)
            with pytest.raises(ValueError, match="flow_id"):
                getattr(backend, operation)({}, flow_id="")
        assert submissions == []

    @pytest.mark.parametrize("operation", ["get_state", "wait", "result", "get_result", "cancel"])
    def test_flow_run_ids_are_checked_by_type_then_by_value(
        self, backend: Backend, operation: str
    ) -> None:
        with pytest.raises(TypeError, match="flow_run_id"):
            getattr(backend, operation)(42)
        with pytest.raises(TypeError, match="flow_run_id"):
            getattr(backend, operation)(None)
        with pytest.raises(ValueError, match="flow_run_id"):
            getattr(backend, operation)(" ")

    def test_task_name_and_flags_are_checked_before_anything_runs(
        self, backend: Backend, target: FlowTargets, submissions: List[FlowRunRequest]
    ) -> None:
        flow = target(flows.arithmetic_flow)
        with pytest.raises(TypeError, match="task_name"):
            backend.run_and_return({}, task_name=1, **flow)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="task_name"):
            backend.run_and_return({}, task_name="", **flow)
        with pytest.raises(TypeError, match="cancel_on_timeout"):
            backend.run_and_return({}, cancel_on_timeout="yes", **flow)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="run_config"):
            backend.run_and_return({}, "docker", **flow)  # type: ignore[arg-type]
        assert submissions == [], "a call with a bad argument reached the adapter's _submit"
        flow_run_id = backend.submit({}, **flow)
        with pytest.raises(TypeError, match="task_name"):
            backend.result(flow_run_id, ["add"])  # type: ignore[arg-type]
        assert _settle(backend, flow_run_id) is FlowRunState.SUCCESS

    def test_server_operation_arguments_are_checked(
        self, backend: Backend, project_name: str
    ) -> None:
        if _refused_without_server(backend, "create_project", 42):
            return
        with pytest.raises(TypeError, match="project_name"):
            backend.create_project(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="flow_name"):
            backend.load_flow(flows.arithmetic_flow, project_name)  # type: ignore[arg-type]
        backend.create_project(project_name)
        bad: List[Dict[str, Any]] = [
            {"labels": "lume-services"},
            {"labels": ["ok", 3]},
            {"image": 3},
            {"idempotency_key": 3},
            {"build": "no"},
            {"no_url": 1},
            {"set_schedule_active": None},
        ]
        for options in bad:
            with pytest.raises(TypeError, match=next(iter(options)).rstrip("s")):
                backend.register_flow(flows.arithmetic_flow, project_name, **options)
        for options in ({"labels": [""]}, {"image": ""}, {"version_group_id": ""}):
            with pytest.raises(ValueError):
                backend.register_flow(flows.arithmetic_flow, project_name, **options)
        with pytest.raises(TypeError, match="flow"):
            backend.register_flow("arithmetic", project_name)


class CloseContract(BackendFixtures):
    """After ``close()`` every call is refused with `BackendUnavailableError`."""

    def test_every_call_after_close_raises_backend_unavailable(
        self, backend: Backend, target: FlowTargets, project_name: str
    ) -> None:
        flow = target(flows.arithmetic_flow)  # registered (server backends) before closing
        flow_run_id = backend.submit({}, **flow)
        assert _settle(backend, flow_run_id) is FlowRunState.SUCCESS
        backend.close()
        calls: Dict[str, Callable[[], Any]] = {
            "create_project": lambda: backend.create_project(project_name),
            "register_flow": lambda: backend.register_flow(flows.arithmetic_flow, project_name),
            "load_flow": lambda: backend.load_flow("arithmetic", project_name),
            "submit": lambda: backend.submit({}, **flow),
            "run": lambda: backend.run({}, **flow),
            "run_and_return": lambda: backend.run_and_return({}, task_name="add", **flow),
            "get_state": lambda: backend.get_state(flow_run_id),
            "wait": lambda: backend.wait(flow_run_id, timeout=SETTLE_SECONDS),
            "get_result": lambda: backend.get_result(flow_run_id),
            "result": lambda: backend.result(flow_run_id, "add"),
            "cancel": lambda: backend.cancel(flow_run_id),
        }
        outcomes: Dict[str, str] = {}
        for operation, call in calls.items():
            try:
                call()
            except BackendUnavailableError as err:
                if "closed" not in str(err):
                    outcomes[operation] = f"BackendUnavailableError not saying so: {err}"
            except BaseException as err:  # reported below, with every other call
                outcomes[operation] = f"{type(err).__name__}: {err}"
            else:
                outcomes[operation] = "it worked"
        assert outcomes == {}, f"calls after close() that were not refused: {outcomes}"
        backend.close()  # still idempotent
        assert isinstance(backend.capabilities, BackendCapabilities)


class RunConfigContract(BackendFixtures):
    """Run configs: validated before anything runs; ``run_config`` wins over kwargs."""

    @pytest.mark.parametrize("operation", ["run", "run_and_return", "submit"])
    @pytest.mark.parametrize(
        "bad_fields",
        [{"labels": [""]}, {"no_such_field": 1}, {"env": {"A": None}}],
        ids=["empty-label", "unknown-field", "env-none"],
    )
    def test_invalid_run_config_is_rejected_before_anything_runs(
        self,
        backend: Backend,
        target: FlowTargets,
        run_config_fields: Dict[str, Any],
        submissions: List[FlowRunRequest],
        operation: str,
        bad_fields: Dict[str, Any],
    ) -> None:
        flow = target(flows.arithmetic_flow)
        with pytest.raises(pydantic.ValidationError):
            getattr(backend, operation)({}, **flow, **run_config_fields, **bad_fields)
        with pytest.raises(pydantic.ValidationError):
            getattr(backend, operation)({}, {**run_config_fields, **bad_fields}, **flow)
        assert submissions == [], "an invalid run config reached the adapter's _submit"

    @pytest.mark.parametrize("operation", ["run", "run_and_return", "submit"])
    def test_an_unknown_key_is_refused_by_name(
        self,
        backend: Backend,
        target: FlowTargets,
        run_config_fields: Dict[str, Any],
        submissions: List[FlowRunRequest],
        operation: str,
    ) -> None:
        # Next to a field of another kind (ignored), an unknown key is still an error.
        other = _a_foreign_field(backend)
        with pytest.raises(pydantic.ValidationError, match="no_such_key"):
            getattr(backend, operation)(
                {}, **target(flows.arithmetic_flow), **run_config_fields, no_such_key=1, **other
            )
        assert submissions == []

    def test_a_field_of_another_run_config_kind_is_ignored_with_a_warning(
        self,
        backend: Backend,
        target: FlowTargets,
        run_config_fields: Dict[str, Any],
        submissions: List[FlowRunRequest],
    ) -> None:
        # lume-services' Flow.run_and_return passes image= on every backend.
        other = _a_foreign_field(backend)
        if not other:
            return  # this backend's run config has every field of every kind
        (name,) = other
        flow = target(flows.arithmetic_flow)
        with pytest.warns(UserWarning, match=name) as record:
            result = backend.run_and_return(
                {"x": 2, "y": 2}, task_name="add", **flow, **run_config_fields, **other
            )
        assert result == 4
        (warning,) = [w for w in record if name in str(w.message)]
        message = str(warning.message)
        assert type(backend).__name__ in message and backend.run_config_type.__name__ in message
        assert "ignores" in message
        assert warning.filename == __file__, "the warning must name the caller's line"
        (request,) = submissions
        assert type(request.run_config) is backend.run_config_type
        assert name not in request.run_config.dict()
        # The seed's run() takes the same keyword arguments.
        with pytest.warns(UserWarning, match=name):
            flow_run_id = backend.run({}, **flow, **run_config_fields, **other)
        if flow_run_id is not None:
            assert _settle(backend, flow_run_id) is FlowRunState.SUCCESS

    def test_a_run_config_of_another_kind_is_not_taken_for_this_one(
        self, backend: Backend, target: FlowTargets, submissions: List[FlowRunRequest]
    ) -> None:
        # Given whole, a run config says what it is for: fields that do not fit are errors.
        other = _a_foreign_field(backend)
        if not other:
            return
        with pytest.raises(pydantic.ValidationError, match=next(iter(other))):
            backend.run_and_return({}, other, **target(flows.arithmetic_flow))
        assert submissions == []

    def test_keyword_arguments_build_the_backends_run_config(
        self,
        backend: Backend,
        target: FlowTargets,
        run_config_fields: Dict[str, Any],
        submissions: List[FlowRunRequest],
    ) -> None:
        assert (
            backend.run_and_return(
                {}, task_name="add", **target(flows.arithmetic_flow), **run_config_fields
            )
            == 3
        )
        (request,) = submissions
        assert type(request.run_config) is backend.run_config_type

    def test_run_config_and_keyword_arguments_warn_and_use_run_config(
        self,
        backend: Backend,
        target: FlowTargets,
        run_config_fields: Dict[str, Any],
        submissions: List[FlowRunRequest],
    ) -> None:
        run_config = backend.run_config_type(**run_config_fields)
        flow = target(flows.arithmetic_flow)
        with pytest.warns(UserWarning, match="run_config") as record:
            result = backend.run_and_return(
                {"x": 5, "y": 7}, run_config, "add", labels=["from-kwargs"], **flow
            )
        assert result == 12
        # The warning names the caller's line, not the adapter's own layer.
        assert [warning.filename for warning in record if "run_config" in str(warning.message)] == [
            __file__
        ]
        (request,) = submissions
        assert request.run_config == run_config
        assert "from-kwargs" not in request.run_config.labels

    def test_run_config_env_stays_out_of_the_caller(
        self,
        backend: Backend,
        target: FlowTargets,
        run_config_fields: Dict[str, Any],
    ) -> None:
        name = "LUME_SCHEDULING_EXAMPLE"
        token = f"contract-{uuid.uuid4()}"
        assert name not in os.environ
        before = dict(os.environ)
        flow_run_id = backend.submit(
            {"name": name},
            env={name: token},
            **target(flows.environment_flow),
            **run_config_fields,
        )
        record = backend.get_result(flow_run_id, timeout=SETTLE_SECONDS)
        assert dict(os.environ) == before, "the run's env leaked into the caller"
        assert record.state is FlowRunState.SUCCESS
        if backend.capabilities.isolation:
            # An isolating backend gives each run the env of its run config.
            assert record.values["read_env-1"] == token
        else:
            assert record.values["read_env-1"] in (None, token)


class BackendContractSuite(
    ProjectAndFlowContract,
    RunContract,
    ResultSelectionContract,
    RunErrorContract,
    LifecycleContract,
    TimeoutAndCancelContract,
    RunConfigContract,
    ArgumentContract,
    CloseContract,
):
    """Every contract test. Subclass it as ``Test...`` and define ``backend``."""

    def test_declares_its_capabilities(self, backend: Backend) -> None:
        capabilities = backend.capabilities
        assert isinstance(capabilities, BackendCapabilities)
        declared = {field.name for field in dataclasses.fields(BackendCapabilities)}
        assert set(capabilities.names()) <= declared
        assert isinstance(backend.run_config_type, type)
