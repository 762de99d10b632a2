"""Finished flow runs, their task runs, and the one rule that picks a result.

`select_task_result` is the rule every backend's ``run_and_return`` uses: exact
task name first, then exact slug (never a substring: in the original, ``add``
picked ``add_more``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from .errors import (
    EmptyResultError,
    FlowFailedError,
    FlowRunCancelledError,
    FlowRunTimeoutError,
    TaskNotCompletedError,
    TaskNotInFlowError,
)
from .secrets import mask_text


class FlowRunState(str, Enum):
    """Where a flow run is in its life. The last five are final."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"

    @property
    def is_final(self) -> bool:
        """True once the run has ended, whichever way."""
        return self not in (FlowRunState.SCHEDULED, FlowRunState.RUNNING)

    def __str__(self) -> str:
        return self.value


class TaskRunState(str, Enum):
    """The state of one task run (or one mapped child)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_successful(self) -> bool:
        """Success or Skipped, as in Prefect (a skipped task has no value)."""
        return self in (TaskRunState.SUCCESS, TaskRunState.SKIPPED)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TaskRun:
    """One task run of a flow run.

    Attributes:
        slug: The task's slug, unique within the flow (e.g. ``"add-1"``).
        name: The task's name (several tasks may share one).
        state: Its final state.
        value: What it returned; None means "no value".
        map_index: None for a task (or the parent of a mapped task), else the
            index of this mapped child.
        message: What the state said, e.g. the exception of a failed task.
    """

    slug: str
    name: str
    state: TaskRunState
    value: Any = None
    map_index: Optional[int] = None
    message: Optional[str] = None

    @property
    def key(self) -> str:
        """``slug`` for a task, ``slug[i]`` for mapped child ``i``."""
        return self.slug if self.map_index is None else f"{self.slug}[{self.map_index}]"


@dataclass(frozen=True)
class FlowRunResult:
    """A flow run that has ended, with its task runs.

    Attributes:
        flow_run_id: Id of the run.
        flow_id: Id of the flow, when the backend has one.
        state: The final state.
        task_runs: Every task run; mapped children carry a ``map_index``.
        message: What the final state said (e.g. why it failed).
        flow_name: Name of the flow, when known.
        project_name: Name of the project, when known.
        exception_type: Name of the exception that failed the run, when known.
    """

    flow_run_id: str
    flow_id: Optional[str]
    state: FlowRunState
    task_runs: Tuple[TaskRun, ...] = field(default_factory=tuple)
    message: Optional[str] = None
    flow_name: Optional[str] = None
    project_name: Optional[str] = None
    exception_type: Optional[str] = None

    @property
    def values(self) -> Dict[str, Any]:
        """Every task's value by slug (mapped children left out)."""
        return {run.slug: run.value for run in self.task_runs if run.map_index is None}

    def mapped_value(self, slug: str, map_index: int) -> Any:
        """The value of child ``map_index`` of the mapped task ``slug``.

        Raises:
            TaskNotInFlowError: No such mapped child.
            TaskNotCompletedError: The child did not succeed.
            EmptyResultError: The child returned nothing.
        """
        for run in self.task_runs:
            if run.slug == slug and run.map_index == map_index:
                return _checked_value(run, self)
        raise TaskNotInFlowError(
            self.flow_name,
            self.project_name,
            f"{slug}[{map_index}]",
            available=(run.key for run in self.task_runs),
        )

    def failure(self) -> Optional[Exception]:
        """The domain error that says why this run did not succeed, or None."""
        if self.state is FlowRunState.SUCCESS:
            return None
        if self.state is FlowRunState.CANCELLED:
            return FlowRunCancelledError(
                self.flow_id, self.flow_run_id, self.message, flow_name=self.flow_name
            )
        if self.state is FlowRunState.TIMED_OUT:
            return FlowRunTimeoutError(self.flow_run_id, cancelled=True, flow_id=self.flow_id)
        return FlowFailedError(
            self.flow_id,
            self.flow_run_id,
            self.message,
            exception_type=self.exception_type,
            flow_name=self.flow_name,
            state=self.state.value,
        )

    def select(self, task_name: Optional[str] = None) -> Any:
        """Pick the result the way ``run_and_return`` does; see `select_task_result`."""
        return select_task_result(self, task_name)

    def masked(self, secrets: Sequence[str]) -> "FlowRunResult":
        """This record with every secret masked in its messages (the run's and
        each task run's); itself when nothing needs masking.

        Args:
            secrets: Texts to mask, longest first (see
                `lume_scheduling.domain.secrets.secret_values`).
        """
        if not secrets:
            return self
        message = None if self.message is None else mask_text(self.message, secrets)
        changed = message != self.message
        task_runs = []
        for run in self.task_runs:
            if run.message is not None:
                text = mask_text(run.message, secrets)
                if text != run.message:
                    run = dataclasses.replace(run, message=text)
                    changed = True
            task_runs.append(run)
        if not changed:
            return self
        return dataclasses.replace(self, message=message, task_runs=tuple(task_runs))


def _checked_value(run: TaskRun, result: FlowRunResult) -> Any:
    if not run.state.is_successful:
        raise TaskNotCompletedError(
            run.key, result.flow_id, result.flow_run_id, state=run.state.value
        )
    if run.value is None:
        raise EmptyResultError(result.flow_id, result.flow_run_id, run.key)
    return run.value


def select_task_result(result: FlowRunResult, task_name: Optional[str] = None) -> Any:
    """Pick what ``run_and_return`` gives back from a finished flow run.

    Args:
        result: The finished run.
        task_name: The task asked for, or None for every task.

    Returns:
        With no ``task_name``: ``{slug: value}`` of every task. Otherwise the tasks
        whose name equals ``task_name`` or, if none, the one whose slug equals it:
        one match gives its value, several give ``{slug: value}``.

    Raises:
        TaskNotInFlowError: No task has that name or slug; lists those that exist.
        TaskNotCompletedError: A matched task (with no ``task_name``: any task)
            did not succeed.
        EmptyResultError: A matched task returned nothing.
    """
    tasks = sorted(
        (run for run in result.task_runs if run.map_index is None), key=lambda r: r.slug
    )
    if task_name is None:
        for run in tasks:
            if not run.state.is_successful:
                raise TaskNotCompletedError(
                    run.slug, result.flow_id, result.flow_run_id, state=run.state.value
                )
        return {run.slug: run.value for run in tasks}
    matched = [run for run in tasks if run.name == task_name] or [
        run for run in tasks if run.slug == task_name
    ]
    if not matched:
        raise TaskNotInFlowError(
            result.flow_name,
            result.project_name,
            task_name,
            available=_names_and_slugs(tasks),
        )
    values = {run.slug: _checked_value(run, result) for run in matched}
    if len(values) == 1:
        return next(iter(values.values()))
    return values


def _names_and_slugs(tasks: Iterable[TaskRun]) -> set[str]:
    known: set[str] = set()
    for run in tasks:
        known.update((run.name, run.slug))
    return known


def as_timedelta(timeout: Optional[object], argument: str = "timeout") -> Optional[timedelta]:
    """Read a time-out given as a `timedelta` or as seconds.

    Args:
        timeout: None (no time-out), a `timedelta`, or a non-negative number of
            seconds.
        argument: The argument's name, for the error message.

    Raises:
        TypeError: ``timeout`` is neither.
        ValueError: ``timeout`` is negative, not finite, or too large for a
            `timedelta` (more than about 2.7 million years).
    """
    if timeout is None:
        return None
    if isinstance(timeout, timedelta):
        delta = timeout
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        if timeout != timeout or timeout in (float("inf"), float("-inf")):
            raise ValueError(f"{argument} must be a finite number of seconds, not {timeout!r}")
        if timeout < 0:
            raise ValueError(f"{argument} cannot be negative, got {timeout!r} s")
        try:
            delta = timedelta(seconds=timeout)
        except OverflowError:
            raise ValueError(
                f"{argument} is too large: {timeout!r} s is beyond what a timedelta holds"
            ) from None
    else:
        raise TypeError(
            f"{argument} must be a timedelta or a number of seconds, not {type(timeout).__name__}"
        )
    if delta < timedelta(0):
        raise ValueError(f"{argument} cannot be negative, got {delta.total_seconds():g} s")
    return delta
