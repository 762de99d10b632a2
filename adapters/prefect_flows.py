"""Running a Prefect 1 flow in this process and reading its states as domain records.

Shared by the adapters that execute flows themselves (the in-memory fake and the
local backend's workers). Prefect states never leave this module: callers get a
`FlowRunResult`.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Mapping, Optional, Tuple

import prefect
from prefect.engine import state as prefect_state

from lume_scheduling.domain import FlowParameter, FlowRunResult, FlowRunState, TaskRun, TaskRunState


def is_prefect_flow(candidate: Any) -> bool:
    """True for a Prefect 1 ``Flow``."""
    return isinstance(candidate, prefect.Flow)


def flow_parameters(flow: "prefect.Flow") -> Tuple[FlowParameter, ...]:
    """The parameters a Prefect 1 flow declares, sorted by name (as ``Flow.run``
    sees them: a parameter without a default is required)."""
    return tuple(
        sorted(
            (
                FlowParameter(p.name, required=bool(p.required), default=None if p.required else p.default)
                for p in flow.parameters()
            ),
            key=lambda parameter: parameter.name,
        )
    )


def serialized_flow_parameters(serialized_flow: Any) -> Optional[Tuple[FlowParameter, ...]]:
    """The parameters listed in a serialized flow (a Prefect Server's
    ``flow.serialized_flow``), sorted by name; None when it lists none in a
    readable form."""
    if not isinstance(serialized_flow, Mapping):
        return None
    listed = serialized_flow.get("parameters")
    if not isinstance(listed, list):
        return None
    parameters = []
    for entry in listed:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            return None
        required = bool(entry.get("required"))
        parameters.append(FlowParameter(entry["name"], required=required, default=None if required else entry.get("default")))
    return tuple(sorted(parameters, key=lambda parameter: parameter.name))


def task_run_state(state: prefect_state.State) -> TaskRunState:
    """The domain state of one Prefect task state."""
    if isinstance(state, prefect_state.Skipped):
        return TaskRunState.SKIPPED
    if isinstance(state, prefect_state.Success):
        return TaskRunState.SUCCESS
    if isinstance(state, prefect_state.Cancelled):
        return TaskRunState.CANCELLED
    if isinstance(state, prefect_state.Failed):
        return TaskRunState.FAILED
    if isinstance(state, (prefect_state.Running, prefect_state.Looped)):
        return TaskRunState.RUNNING
    return TaskRunState.PENDING


def flow_run_state(state: prefect_state.State) -> FlowRunState:
    """The domain state of a Prefect flow state."""
    if isinstance(state, prefect_state.Success):
        return FlowRunState.SUCCESS
    if isinstance(state, prefect_state.Cancelled):
        return FlowRunState.CANCELLED
    if isinstance(state, prefect_state.TimedOut):
        return FlowRunState.TIMED_OUT
    if isinstance(state, prefect_state.Failed):
        return FlowRunState.FAILED
    if isinstance(state, prefect_state.Running):
        return FlowRunState.RUNNING
    if isinstance(state, prefect_state.Finished):
        return FlowRunState.FAILED
    return FlowRunState.SCHEDULED


def _message(state: prefect_state.State) -> Optional[str]:
    if isinstance(state.result, BaseException):
        return f"{type(state.result).__name__}: {state.result}"
    return None if state.message is None else str(state.message)


def _task_runs(slug: str, name: str, state: prefect_state.State) -> List[TaskRun]:
    if not isinstance(state, prefect_state.Mapped):
        domain_state = task_run_state(state)
        value = state.result if domain_state is TaskRunState.SUCCESS else None
        return [TaskRun(slug, name, domain_state, value, None, _message(state))]
    children = [
        TaskRun(slug, name, task_run_state(child), child.result if child.is_successful() else None,
                index, _message(child))
        for index, child in enumerate(state.map_states)
    ]
    all_succeeded = all(child.state.is_successful for child in children)
    parent_state = TaskRunState.SUCCESS if all_succeeded else TaskRunState.FAILED
    parent_value = [child.value for child in children] if all_succeeded else None
    return [TaskRun(slug, name, parent_state, parent_value, None, _message(state)), *children]


def _root_failure(task_runs: Iterable[Tuple[TaskRun, prefect_state.State]]) -> Optional[Tuple[str, str]]:
    """(exception type, message) of the first task that failed on its own."""
    fallback = None
    for run, state in task_runs:
        if run.state is not TaskRunState.FAILED:
            continue
        cause = state.result
        if isinstance(cause, BaseException):
            found = (type(cause).__name__, f"task {run.slug!r}: {cause}")
            if not isinstance(state, prefect_state.TriggerFailed):
                return found
            fallback = fallback or found
    return fallback


def flow_run_result(
    flow: "prefect.Flow",
    state: prefect_state.State,
    *,
    flow_run_id: str,
    flow_id: Optional[str] = None,
    project_name: Optional[str] = None,
) -> FlowRunResult:
    """Read the final Prefect state of a flow run as a `FlowRunResult`.

    Args:
        flow: The flow that ran (for task slugs and names).
        state: What ``flow.run()`` returned.
        flow_run_id: Id of the run.
        flow_id: Id of the flow, when it has one.
        project_name: Project of the flow, when it has one.
    """
    task_states: Mapping[Any, prefect_state.State] = (
        state.result if isinstance(state.result, Mapping) else {}
    )
    pairs: List[Tuple[TaskRun, prefect_state.State]] = []
    for task, task_state in sorted(task_states.items(), key=lambda item: flow.slugs.get(item[0], "")):
        slug = flow.slugs.get(task, task.name)
        runs = _task_runs(slug, task.name, task_state)
        pairs.append((runs[0], task_state))
        pairs.extend(
            (child, child_state)
            for child, child_state in zip(runs[1:], getattr(task_state, "map_states", []))
        )
    domain_state = flow_run_state(state)
    message = None if state.message is None else str(state.message)
    exception_type = None
    if domain_state is not FlowRunState.SUCCESS:
        failure = _root_failure(pairs)
        if failure is not None:
            exception_type, detail = failure
            message = detail
        elif isinstance(state.result, BaseException):
            exception_type, message = type(state.result).__name__, str(state.result)
    return FlowRunResult(
        flow_run_id=flow_run_id,
        flow_id=flow_id,
        state=domain_state,
        task_runs=tuple(run for run, _ in pairs),
        message=message,
        flow_name=flow.name,
        project_name=project_name,
        exception_type=exception_type,
    )


def execute_flow(
    flow: "prefect.Flow",
    parameters: Mapping[str, Any],
    *,
    flow_run_id: str,
    flow_id: Optional[str] = None,
    project_name: Optional[str] = None,
) -> FlowRunResult:
    """Run a flow once, here and now, and return its record.

    Never raises for what the flow does: an exception from Prefect itself (for
    example a missing parameter) becomes a FAILED record with its type and message.
    Schedules are ignored (``run_on_schedule=False``): a flow with a schedule runs
    once instead of blocking forever, as it did in the original.
    """
    try:
        state = flow.run(
            parameters=dict(parameters), run_on_schedule=False, flow_run_id=flow_run_id
        )
    except Exception as err:  # prefect raises plain exceptions for bad parameters
        return FlowRunResult(
            flow_run_id=flow_run_id,
            flow_id=flow_id,
            state=FlowRunState.FAILED,
            message=str(err),
            flow_name=getattr(flow, "name", None),
            project_name=project_name,
            exception_type=type(err).__name__,
        )
    return flow_run_result(
        flow, state, flow_run_id=flow_run_id, flow_id=flow_id, project_name=project_name
    )
