"""Picking a result from a finished flow run: `select_task_result`, checked against
a plain reference implementation on generated flow runs."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from lume_scheduling.domain import (
    EmptyResultError,
    FlowFailedError,
    FlowRunCancelledError,
    FlowRunResult,
    FlowRunState,
    FlowRunTimeoutError,
    TaskNotCompletedError,
    TaskNotInFlowError,
    TaskRun,
    TaskRunState,
    select_task_result,
)

# Names and slugs that overlap on purpose: substrings ("add" / "add_more"), a
# name equal to another task's slug ("mul"), case ("Add").
NAMES = ["add", "add_more", "mul", "Add", "a", "add-1", "sum"]
SLUGS = ["add-1", "add-2", "add_more-1", "mul", "mul-1", "a-1", "add", "sum-copy"]
OK_STATES = {TaskRunState.SUCCESS, TaskRunState.SKIPPED}


def _some_values() -> st.SearchStrategy[Any]:
    return st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2) | st.booleans()


def _values() -> st.SearchStrategy[Any]:
    return st.none() | _some_values()


# Mostly successful, so that the value branches are reached often.
STATES = st.sampled_from([TaskRunState.SUCCESS] * 6 + list(TaskRunState))


@st.composite
def flow_runs(draw: st.DrawFn) -> FlowRunResult:
    """A finished flow run with tasks of overlapping names and slugs, some mapped."""
    slug_pool = st.sampled_from(SLUGS) | st.text(min_size=1, max_size=4)
    slugs = draw(st.lists(slug_pool, unique=True, max_size=6))
    # Often "add" or "mul", so that several tasks share a name.
    names = st.one_of(st.sampled_from(["add", "mul"]), st.sampled_from(NAMES), st.text(max_size=4))
    # Half the runs are healthy (every task succeeded with a value), so that
    # several-match mappings come up often.
    healthy = draw(st.booleans())
    states = st.just(TaskRunState.SUCCESS) if healthy else STATES
    values = _some_values() if healthy else _values()
    runs = [TaskRun(slug, draw(names), draw(states), draw(values)) for slug in slugs]
    # Mapped children never count as tasks of their own.
    if slugs:
        for index in range(draw(st.integers(0, 3))):
            parent = draw(st.sampled_from(runs))
            runs.append(
                TaskRun(parent.slug, parent.name, draw(STATES), draw(_values()), map_index=index)
            )
    order = draw(st.permutations(runs))
    return FlowRunResult(
        flow_run_id=draw(st.sampled_from(["run-1", "run-2"])),
        flow_id=draw(st.none() | st.just("flow-1")),
        state=FlowRunState.SUCCESS,
        task_runs=tuple(order),
        flow_name=draw(st.none() | st.just("my-flow")),
        project_name=draw(st.none() | st.just("my-project")),
    )


def reference(result: FlowRunResult, task_name: Optional[str]) -> Tuple[str, Any]:
    """What `select_task_result` must do, written plainly.

    Returns ("value", value), ("missing", known names and slugs) or
    ("errors", {slug: error type}) for the matched tasks that cannot give a value.
    """
    tasks = [run for run in result.task_runs if run.map_index is None]
    if task_name is None:
        failed = {run.slug: TaskNotCompletedError for run in tasks if run.state not in OK_STATES}
        if failed:
            return "errors", failed
        return "value", {run.slug: run.value for run in tasks}
    matched = [run for run in tasks if run.name == task_name]
    if not matched:
        matched = [run for run in tasks if run.slug == task_name]
    if not matched:
        return "missing", sorted({run.name for run in tasks} | {run.slug for run in tasks})
    problems: Dict[str, type] = {}
    for run in matched:
        if run.state not in OK_STATES:
            problems[run.slug] = TaskNotCompletedError
        elif run.value is None:
            problems[run.slug] = EmptyResultError
    if problems:
        return "errors", problems
    if len(matched) == 1:
        return "value", matched[0].value
    return "value", {run.slug: run.value for run in matched}


def task_names(result: FlowRunResult) -> st.SearchStrategy[Optional[str]]:
    known = sorted({run.name for run in result.task_runs} | {run.slug for run in result.task_runs})
    return st.one_of(
        st.none(), st.sampled_from(known or ["add"]), st.sampled_from(NAMES + SLUGS), st.text(max_size=4)
    )


class TestSelectionMatchesTheReference:
    @given(data=st.data())
    def test_generated_flow_runs(self, data: st.DataObject) -> None:
        result = data.draw(flow_runs(), label="result")
        task_name = data.draw(task_names(result), label="task_name")
        kind, expected = reference(result, task_name)
        several = kind == "value" and task_name is not None and isinstance(expected, dict)
        event(f"{kind} (several matched)" if several else kind)
        if kind == "value":
            assert select_task_result(result, task_name) == expected
            assert result.select(task_name) == expected
            return
        with pytest.raises((TaskNotCompletedError, TaskNotInFlowError, EmptyResultError)) as caught:
            select_task_result(result, task_name)
        error = caught.value
        if kind == "missing":
            assert type(error) is TaskNotInFlowError
            assert error.task_name == task_name
            assert list(error.available) == expected
            for known in expected:
                assert known in str(error)
        else:
            assert error.task_slug in expected, (error.task_slug, expected)
            assert type(error) is expected[error.task_slug]
            assert error.flow_run_id == result.flow_run_id
            assert error.flow_id == result.flow_id


class TestSeveralMatches:
    @given(
        shared=st.lists(st.tuples(st.text(min_size=1, max_size=5), _some_values()), min_size=2, max_size=5, unique_by=lambda pair: pair[0]),
        others=flow_runs(),
    )
    def test_every_task_of_the_name_by_slug(self, shared: List[Tuple[str, Any]], others: FlowRunResult) -> None:
        slugs = {slug for slug, _ in shared}
        rest = tuple(run for run in others.task_runs if run.name != "shared" and run.slug not in slugs)
        runs = tuple(TaskRun(slug, "shared", TaskRunState.SUCCESS, value) for slug, value in shared)
        result = FlowRunResult("run-1", None, FlowRunState.SUCCESS, task_runs=runs + rest)
        assert select_task_result(result, "shared") == dict(shared)
        assert reference(result, "shared") == ("value", dict(shared))


def run(slug: str, name: str, state: TaskRunState = TaskRunState.SUCCESS, value: Any = 1, **more: Any) -> TaskRun:
    return TaskRun(slug, name, state, value, **more)


def finished(*runs: TaskRun) -> FlowRunResult:
    return FlowRunResult("run-1", "flow-1", FlowRunState.SUCCESS, task_runs=runs, flow_name="f")


class TestSelectionExamples:
    def test_add_never_picks_add_more(self) -> None:
        result = finished(run("add_more-1", "add_more", value=10), run("add-1", "add", value=3))
        assert select_task_result(result, "add") == 3
        with pytest.raises(TaskNotInFlowError):
            select_task_result(finished(run("add_more-1", "add_more")), "add")

    def test_name_before_slug(self) -> None:
        result = finished(run("mul", "other", value="by slug"), run("x-1", "mul", value="by name"))
        assert select_task_result(result, "mul") == "by name"

    def test_slug_when_no_name_matches(self) -> None:
        result = finished(run("add-1", "add", value=1), run("add-2", "add", value=2))
        assert select_task_result(result, "add-2") == 2

    def test_several_matches_give_a_mapping_by_slug(self) -> None:
        result = finished(run("add-1", "add", value=1), run("add-2", "add", value=2))
        assert select_task_result(result, "add") == {"add-1": 1, "add-2": 2}

    def test_no_task_name_gives_every_task_by_slug(self) -> None:
        result = finished(run("a-1", "a", value=1), run("b-1", "b", value=None), run("a-1", "a", value=9, map_index=0))
        assert select_task_result(result) == {"a-1": 1, "b-1": None}

    def test_missing_task_lists_what_exists(self) -> None:
        with pytest.raises(TaskNotInFlowError) as caught:
            select_task_result(finished(run("add-1", "add"), run("mul-1", "mul")), "div")
        assert caught.value.available == ("add", "add-1", "mul", "mul-1")
        assert "add, add-1, mul, mul-1" in str(caught.value)
        assert "'div'" in str(caught.value)

    @pytest.mark.parametrize("state", [TaskRunState.FAILED, TaskRunState.CANCELLED, TaskRunState.PENDING, TaskRunState.RUNNING])
    def test_matched_task_not_successful(self, state: TaskRunState) -> None:
        with pytest.raises(TaskNotCompletedError) as caught:
            select_task_result(finished(run("add-1", "add", state)), "add")
        assert caught.value.task_slug == "add-1"
        assert caught.value.state == state.value
        assert "add-1" in str(caught.value) and state.value in str(caught.value)

    def test_matched_task_without_value(self) -> None:
        with pytest.raises(EmptyResultError) as caught:
            select_task_result(finished(run("add-1", "add", value=None)), "add")
        assert caught.value.task_slug == "add-1"
        assert caught.value.flow_run_id == "run-1"

    def test_unrelated_failed_task_does_not_matter(self) -> None:
        result = finished(run("add-1", "add", value=5), run("bad-1", "bad", TaskRunState.FAILED))
        assert select_task_result(result, "add") == 5
        with pytest.raises(TaskNotCompletedError):
            select_task_result(result)


class TestMappedChildren:
    def test_addressed_by_slug_and_index(self) -> None:
        result = finished(
            run("inc-1", "inc", value=[2, 3]),
            run("inc-1", "inc", value=2, map_index=0),
            run("inc-1", "inc", value=3, map_index=1),
        )
        assert result.mapped_value("inc-1", 1) == 3
        assert result.values == {"inc-1": [2, 3]}
        assert TaskRun("inc-1", "inc", TaskRunState.SUCCESS, 3, map_index=1).key == "inc-1[1]"

    def test_missing_child(self) -> None:
        with pytest.raises(TaskNotInFlowError) as caught:
            finished(run("inc-1", "inc", map_index=0)).mapped_value("inc-1", 5)
        assert "inc-1[0]" in caught.value.available

    def test_failed_and_empty_children(self) -> None:
        result = finished(
            run("inc-1", "inc", TaskRunState.FAILED, map_index=0), run("inc-1", "inc", value=None, map_index=1)
        )
        with pytest.raises(TaskNotCompletedError):
            result.mapped_value("inc-1", 0)
        with pytest.raises(EmptyResultError):
            result.mapped_value("inc-1", 1)


class TestFlowRunFailure:
    def test_success_has_no_failure(self) -> None:
        assert finished().failure() is None

    @pytest.mark.parametrize(
        "state, error_type",
        [
            (FlowRunState.FAILED, FlowFailedError),
            (FlowRunState.CRASHED, FlowFailedError),
            (FlowRunState.CANCELLED, FlowRunCancelledError),
            (FlowRunState.TIMED_OUT, FlowRunTimeoutError),
        ],
    )
    def test_each_final_state_has_its_error(self, state: FlowRunState, error_type: type) -> None:
        result = FlowRunResult("run-9", "flow-1", state, message="boom", flow_name="f")
        error = result.failure()
        assert type(error) is error_type
        assert error.flow_run_id == "run-9"
        if isinstance(error, FlowFailedError):
            assert error.state == state.value
            assert state.value in str(error)

    def test_final_states(self) -> None:
        assert {state for state in FlowRunState if state.is_final} == {
            FlowRunState.SUCCESS,
            FlowRunState.FAILED,
            FlowRunState.CANCELLED,
            FlowRunState.TIMED_OUT,
            FlowRunState.CRASHED,
        }
