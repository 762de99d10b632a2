"""The domain errors: hierarchy, fields, readable messages, bare raise, pickling."""

from __future__ import annotations

import copy
import pickle
from datetime import timedelta
from typing import Any, Dict

import pytest
from hypothesis import given
from hypothesis import strategies as st

import lume_scheduling.domain as domain
from lume_scheduling.domain import (
    BackendUnavailableError,
    EmptyResultError,
    FlowFailedError,
    FlowArchivedError,
    FlowNotFoundError,
    FlowParameter,
    FlowParameterError,
    FlowRunCancelledError,
    FlowRunNotFoundError,
    FlowRunTimeoutError,
    LocalBackendError,
    SchedulingError,
    TaskNotCompletedError,
    TaskNotInFlowError,
)
from lume_scheduling.domain import errors as errors_module

ALL_ERRORS = [getattr(errors_module, name) for name in errors_module.__all__]
SPECIFIC_ERRORS = [error for error in ALL_ERRORS if error is not SchedulingError]

# Each error with every field set, the fields it must carry, and words its
# message must contain.
FULL: Dict[type, Any] = {
    EmptyResultError: (
        dict(flow_id="flow-1", flow_run_id="run-1", task_slug="add-1"),
        ["add-1", "flow-1", "run-1", "without a result"],
    ),
    FlowFailedError: (
        dict(
            flow_id="flow-1",
            flow_run_id="run-1",
            exception_message="division by zero",
            exception_type="ZeroDivisionError",
            flow_name="divide",
            state="failed",
        ),
        ["divide", "failed", "ZeroDivisionError", "division by zero", "flow-1", "run-1"],
    ),
    FlowRunCancelledError: (
        dict(flow_id="flow-1", flow_run_id="run-1", exception_message="by user", flow_name="divide"),
        ["divide", "cancelled", "by user", "run-1"],
    ),
    TaskNotCompletedError: (
        dict(task_slug="add-1", flow_id="flow-1", flow_run_id="run-1", state="failed"),
        ["add-1", "did not complete", "failed", "run-1"],
    ),
    TaskNotInFlowError: (
        dict(flow_name="f", project_name="p", task_name="div", available=["mul", "add", "add"]),
        ["'div'", "'f'", "'p'", "add, mul"],
    ),
    LocalBackendError: (dict(operation="create_project"), ["create_project()", "Prefect Server"]),
    FlowRunTimeoutError: (
        dict(flow_run_id="run-1", timeout=timedelta(seconds=90), cancelled=True, flow_id="flow-1"),
        ["90 s", "cancelled", "run-1", "flow-1"],
    ),
    FlowNotFoundError: (dict(flow_name="f", project_name="p"), ["'f'", "'p'"]),
    FlowArchivedError: (
        dict(
            flow_id="flow-1",
            flow_name="f",
            project_name="p",
            version=1,
            newest_flow_id="flow-2",
            newest_version=2,
        ),
        ["flow 'f'", "version 1", "'flow-1'", "archived", "run version 2", "'flow-2'", "'p'"],
    ),
    FlowParameterError: (
        dict(
            flow_name="f",
            unknown=("nosuch",),
            missing=("x",),
            parameters=(FlowParameter("x", required=True), FlowParameter("y", default=[1, 2])),
        ),
        ["flow 'f'", "no parameter 'nosuch'", "needs parameter 'x'", "x (required), y (default [1, 2])"],
    ),
    FlowRunNotFoundError: (dict(flow_run_id="run-404"), ["run-404"]),
    BackendUnavailableError: (
        dict(backend="http://localhost:4200/graphql", reason="connection refused"),
        ["http://localhost:4200/graphql", "connection refused", "unavailable"],
    ),
}


class TestHierarchy:
    @pytest.mark.parametrize("error", ALL_ERRORS)
    def test_every_error_is_a_scheduling_error(self, error: type) -> None:
        assert issubclass(error, SchedulingError)

    def test_timeout_is_also_a_runtime_error(self) -> None:
        assert issubclass(FlowRunTimeoutError, RuntimeError)
        with pytest.raises(RuntimeError):
            raise FlowRunTimeoutError("run-1", timedelta(seconds=1))

    def test_cancelled_is_a_flow_failure(self) -> None:
        assert issubclass(FlowRunCancelledError, FlowFailedError)
        assert FlowRunCancelledError().state == "cancelled"

    def test_public_names_exported(self) -> None:
        for name in ["SchedulingError", "EmptyResultError", "FlowFailedError", "TaskNotCompletedError",
                     "TaskNotInFlowError", "LocalBackendError", "FlowRunTimeoutError", "FlowNotFoundError",
                     "FlowRunNotFoundError", "BackendUnavailableError"]:
            assert getattr(domain, name) is getattr(errors_module, name)

    def test_every_error_is_covered_here(self) -> None:
        assert set(FULL) == set(SPECIFIC_ERRORS)


class TestBareRaise:
    @pytest.mark.parametrize("error", ALL_ERRORS)
    def test_raise_the_class_alone(self, error: type) -> None:
        with pytest.raises(error):
            raise error

    @pytest.mark.parametrize("error", SPECIFIC_ERRORS)
    def test_bare_error_still_reads_well(self, error: type) -> None:
        message = str(error())
        assert message and "None" not in message, message


class TestFieldsAndMessages:
    @pytest.mark.parametrize("error", SPECIFIC_ERRORS)
    def test_fields_kept_and_named_in_the_message(self, error: type) -> None:
        fields, words = FULL[error]
        instance = error(**fields)
        for name, value in fields.items():
            if name == "available":
                assert instance.available == tuple(sorted(set(value)))
            else:
                assert getattr(instance, name) == value, name
        for word in words:
            assert word in str(instance), (word, str(instance))

    def test_flow_failed_without_type_shows_the_message(self) -> None:
        assert str(FlowFailedError("f", "r", "boom")).startswith("flow run failed: boom")

    def test_archived_flow_is_a_flow_not_found_that_says_it_exists(self) -> None:
        error = FlowArchivedError("flow-1", flow_name="f")
        assert isinstance(error, FlowNotFoundError)
        assert "archived" in str(error) and "no flow" not in str(error)
        assert "newest" not in str(error)

    def test_flow_not_found_by_id(self) -> None:
        assert "no flow with id 'abc'" in str(FlowNotFoundError(flow_id="abc"))


def _field_values() -> st.SearchStrategy[Any]:
    return st.none() | st.text(max_size=8)


ERROR_STRATEGIES = {
    EmptyResultError: st.builds(EmptyResultError, _field_values(), _field_values(), _field_values()),
    FlowFailedError: st.builds(
        FlowFailedError, _field_values(), _field_values(), _field_values(),
        exception_type=_field_values(), flow_name=_field_values(), state=_field_values(),
    ),
    FlowRunCancelledError: st.builds(
        FlowRunCancelledError, _field_values(), _field_values(), _field_values(), flow_name=_field_values()
    ),
    TaskNotCompletedError: st.builds(
        TaskNotCompletedError, _field_values(), _field_values(), _field_values(), state=_field_values()
    ),
    TaskNotInFlowError: st.builds(
        TaskNotInFlowError, _field_values(), _field_values(), _field_values(), st.lists(st.text(max_size=4))
    ),
    LocalBackendError: st.builds(LocalBackendError, _field_values()),
    FlowRunTimeoutError: st.builds(
        FlowRunTimeoutError,
        _field_values(),
        st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=2)),
        cancelled=st.booleans(),
        flow_id=_field_values(),
    ),
    FlowNotFoundError: st.builds(FlowNotFoundError, _field_values(), _field_values(), flow_id=_field_values()),
    FlowArchivedError: st.builds(
        FlowArchivedError,
        _field_values(),
        flow_name=_field_values(),
        project_name=_field_values(),
        version=st.none() | st.integers(min_value=1),
        newest_flow_id=_field_values(),
        newest_version=st.none() | st.integers(min_value=1),
    ),
    FlowParameterError: st.builds(
        FlowParameterError,
        _field_values(),
        st.lists(st.text(max_size=4)),
        st.lists(st.text(max_size=4)),
        st.lists(st.builds(FlowParameter, st.text(max_size=4), st.booleans(), st.integers() | st.none())),
    ),
    FlowRunNotFoundError: st.builds(FlowRunNotFoundError, _field_values()),
    BackendUnavailableError: st.builds(BackendUnavailableError, _field_values(), _field_values()),
    SchedulingError: st.builds(SchedulingError, st.text(max_size=8)),
}


class TestPickling:
    """Errors cross from worker processes to the caller by pickle."""

    @given(error=st.one_of(*ERROR_STRATEGIES.values()))
    def test_pickle_keeps_type_message_and_fields(self, error: SchedulingError) -> None:
        for again in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
            assert type(again) is type(error)
            assert str(again) == str(error)
            assert again.args == error.args
            assert vars(again) == vars(error)

    def test_every_error_has_a_strategy(self) -> None:
        assert set(ERROR_STRATEGIES) == set(ALL_ERRORS)
