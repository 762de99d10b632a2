"""The errors every lume-scheduling backend raises, rooted at `SchedulingError`.

Each error keeps what it is about as attributes (flow id, flow run id, task name,
cause) and builds a readable message from them. Every constructor argument has a
default, so a bare ``raise EmptyResultError`` works (in the original it was a
TypeError that hid the real problem).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Iterable, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from .parameters import FlowParameter


def _describe(**fields: object) -> str:
    """Render the known fields of an error as ``name=value`` pairs."""
    parts = [f"{name}={value!r}" for name, value in fields.items() if value is not None]
    return f" ({', '.join(parts)})" if parts else ""


def _restore(cls: type, args: tuple, state: dict) -> "SchedulingError":
    """Rebuild a pickled error without calling its ``__init__`` again."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class SchedulingError(Exception):
    """Base of every error lume-scheduling raises on purpose.

    Errors pickle with their message and fields intact, so that they can cross
    from a worker process to the caller.
    """

    def __reduce__(self) -> tuple:
        # Exception's own reduce calls cls(*args) with the built message as first
        # field, which garbles both the fields and the message.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class EmptyResultError(SchedulingError):
    """A flow run or one of its tasks finished without a value to return.

    Attributes:
        flow_id: Id of the flow, when known.
        flow_run_id: Id of the flow run, when known.
        task_slug: Slug of the task whose value is missing, when a task was asked for.
    """

    def __init__(
        self,
        flow_id: Optional[str] = None,
        flow_run_id: Optional[str] = None,
        task_slug: Optional[str] = None,
    ) -> None:
        self.flow_id = flow_id
        self.flow_run_id = flow_run_id
        self.task_slug = task_slug
        what = f"task {task_slug!r}" if task_slug else "flow run"
        super().__init__(
            f"{what} finished without a result"
            + _describe(flow_id=flow_id, flow_run_id=flow_run_id)
        )


class FlowFailedError(SchedulingError):
    """A flow run ended in a state other than success.

    Attributes:
        flow_id: Id of the flow, when known.
        flow_run_id: Id of the flow run.
        exception_message: What the flow, or the exception that failed it, said.
        exception_type: Name of the exception type that failed the flow, when known.
        flow_name: Name of the flow, when known.
        state: Final state of the run as a lower-case word ("failed", "cancelled",
            "crashed", ...), when known.
    """

    def __init__(
        self,
        flow_id: Optional[str] = None,
        flow_run_id: Optional[str] = None,
        exception_message: Optional[str] = None,
        *,
        exception_type: Optional[str] = None,
        flow_name: Optional[str] = None,
        state: Optional[str] = None,
    ) -> None:
        self.flow_id = flow_id
        self.flow_run_id = flow_run_id
        self.exception_message = exception_message
        self.exception_type = exception_type
        self.flow_name = flow_name
        self.state = state
        subject = f"flow {flow_name!r}" if flow_name else "flow"
        verb = state or "failed"
        cause = ""
        if exception_type and exception_message:
            cause = f": {exception_type}: {exception_message}"
        elif exception_message or exception_type:
            cause = f": {exception_message or exception_type}"
        super().__init__(
            f"{subject} run {verb}{cause}"
            + _describe(flow_id=flow_id, flow_run_id=flow_run_id)
        )


class FlowRunCancelledError(FlowFailedError):
    """A flow run was cancelled before it finished (a `FlowFailedError` too)."""

    def __init__(
        self,
        flow_id: Optional[str] = None,
        flow_run_id: Optional[str] = None,
        exception_message: Optional[str] = None,
        *,
        flow_name: Optional[str] = None,
    ) -> None:
        super().__init__(
            flow_id,
            flow_run_id,
            exception_message,
            flow_name=flow_name,
            state="cancelled",
        )


class TaskNotCompletedError(SchedulingError):
    """A task whose result was asked for did not finish successfully.

    Attributes:
        task_slug: Slug of the task.
        flow_id: Id of the flow, when known.
        flow_run_id: Id of the flow run, when known.
        state: The task's final state as a lower-case word, when known.
    """

    def __init__(
        self,
        task_slug: Optional[str] = None,
        flow_id: Optional[str] = None,
        flow_run_id: Optional[str] = None,
        *,
        state: Optional[str] = None,
    ) -> None:
        self.task_slug = task_slug
        self.flow_id = flow_id
        self.flow_run_id = flow_run_id
        self.state = state
        ended = f" (its state is {state})" if state else ""
        which = f"task {task_slug!r}" if task_slug is not None else "a task"
        super().__init__(
            f"{which} did not complete{ended}"
            + _describe(flow_id=flow_id, flow_run_id=flow_run_id)
        )


class TaskNotInFlowError(SchedulingError):
    """No task of the flow has the requested name or slug.

    Attributes:
        flow_name: Name of the flow, when known.
        project_name: Name of the project, when known.
        task_name: The name that was asked for.
        available: The task names and slugs the flow does have, sorted.
    """

    def __init__(
        self,
        flow_name: Optional[str] = None,
        project_name: Optional[str] = None,
        task_name: Optional[str] = None,
        available: Iterable[str] = (),
    ) -> None:
        self.flow_name = flow_name
        self.project_name = project_name
        self.task_name = task_name
        self.available: Sequence[str] = tuple(sorted(set(available)))
        where = f" of flow {flow_name!r}" if flow_name else ""
        known = (
            f"; tasks are: {', '.join(self.available)}" if self.available else ""
        )
        asked = f"named {task_name!r}" if task_name is not None else "with that name"
        super().__init__(
            f"no task {asked} in the flow run{where}"
            + _describe(project_name=project_name)
            + known
        )


class LocalBackendError(SchedulingError):
    """A server-only operation was called on a backend without a server.

    Attributes:
        operation: The operation that was called, when known.
    """

    def __init__(self, operation: Optional[str] = None) -> None:
        self.operation = operation
        what = f"{operation}() needs" if operation else "this operation needs"
        super().__init__(
            f"{what} a Prefect Server backend (docker or kubernetes); "
            "the local backend runs flows directly: pass flow= to run()"
        )


class FlowRunTimeoutError(SchedulingError, RuntimeError):
    """A flow run did not finish within its time-out (a `RuntimeError` too, as
    the original documents).

    Attributes:
        flow_run_id: Id of the flow run.
        timeout: The time-out that passed.
        cancelled: Whether the run was cancelled because of the time-out.
        flow_id: Id of the flow, when known.
    """

    def __init__(
        self,
        flow_run_id: Optional[str] = None,
        timeout: Optional[timedelta] = None,
        *,
        cancelled: bool = False,
        flow_id: Optional[str] = None,
    ) -> None:
        self.flow_run_id = flow_run_id
        self.timeout = timeout
        self.cancelled = cancelled
        self.flow_id = flow_id
        within = f" within {timeout.total_seconds():g} s" if timeout else ""
        after = "; it was cancelled" if cancelled else ""
        super().__init__(
            f"flow run did not finish{within}{after}"
            + _describe(flow_id=flow_id, flow_run_id=flow_run_id)
        )


class FlowNotFoundError(SchedulingError):
    """No flow with that id, or that name in that project, is known.

    Attributes:
        flow_name: The flow name asked for, when looked up by name.
        project_name: The project asked for, when looked up by name.
        flow_id: The flow id asked for, when looked up by id.
    """

    def __init__(
        self,
        flow_name: Optional[str] = None,
        project_name: Optional[str] = None,
        *,
        flow_id: Optional[str] = None,
    ) -> None:
        self.flow_name = flow_name
        self.project_name = project_name
        self.flow_id = flow_id
        if flow_id is not None:
            what = f"no flow with id {flow_id!r}"
        elif flow_name is None and project_name is None:
            what = "no such flow"
        else:
            named = f" named {flow_name!r}" if flow_name is not None else ""
            where = f" in project {project_name!r}" if project_name is not None else ""
            what = f"no flow{named}{where}"
        super().__init__(what)


class FlowArchivedError(FlowNotFoundError):
    """The flow version asked for is archived: a server runs only a flow's newest
    version (registering a flow again archives the versions before it). A
    `FlowNotFoundError` too.

    Attributes:
        flow_id: The archived version's flow id.
        flow_name: Name of the flow, when known.
        project_name: Its project, when known.
        version: The archived version's number, when known.
        newest_flow_id: Flow id of the flow's newest unarchived version, when
            known (None also when every version is archived).
        newest_version: That version's number, when known.
    """

    def __init__(
        self,
        flow_id: Optional[str] = None,
        *,
        flow_name: Optional[str] = None,
        project_name: Optional[str] = None,
        version: Optional[int] = None,
        newest_flow_id: Optional[str] = None,
        newest_version: Optional[int] = None,
    ) -> None:
        self.flow_name = flow_name
        self.project_name = project_name
        self.flow_id = flow_id
        self.version = version
        self.newest_flow_id = newest_flow_id
        self.newest_version = newest_version
        subject = f"flow {flow_name!r}" if flow_name else "the flow"
        which = ", ".join(
            part
            for part in (
                f"version {version}" if version is not None else None,
                f"flow id {flow_id!r}" if flow_id is not None else None,
            )
            if part
        )
        what = f"{subject} ({which}) is archived" if which else f"{subject} is archived"
        if newest_flow_id is not None:
            newest = f"version {newest_version}" if newest_version is not None else "its newest version"
            what += f"; run {newest} instead (flow id {newest_flow_id!r})"
        # Not FlowNotFoundError's message: the flow exists.
        SchedulingError.__init__(self, what + _describe(project_name=project_name))


class FlowRunNotFoundError(SchedulingError):
    """No flow run with that id is known to the backend.

    Attributes:
        flow_run_id: The id asked for.
    """

    def __init__(self, flow_run_id: Optional[str] = None) -> None:
        self.flow_run_id = flow_run_id
        super().__init__(
            f"no flow run with id {flow_run_id!r}" if flow_run_id is not None else "no such flow run"
        )


class FlowParameterError(SchedulingError, ValueError):
    """Flow parameters that the flow does not declare, or required ones left out.

    Raised before a flow run is created, on every backend (a `ValueError` too,
    as Prefect's own ``flow.run`` and the original server path raise).

    Attributes:
        flow_name: Name of the flow, when known.
        unknown: Names given that the flow does not declare, sorted.
        missing: Required parameters that were not given, sorted.
        parameters: Every parameter the flow declares (name, required, default),
            sorted by name.
    """

    def __init__(
        self,
        flow_name: Optional[str] = None,
        unknown: Iterable[str] = (),
        missing: Iterable[str] = (),
        parameters: Iterable["FlowParameter"] = (),
    ) -> None:
        self.flow_name = flow_name
        self.unknown: Tuple[str, ...] = tuple(sorted(set(unknown)))
        self.missing: Tuple[str, ...] = tuple(sorted(set(missing)))
        self.parameters: Tuple["FlowParameter", ...] = tuple(
            sorted(parameters, key=lambda parameter: parameter.name)
        )
        subject = f"flow {flow_name!r}" if flow_name else "the flow"
        problems = []
        if self.unknown:
            problems.append(f"has no {_plural('parameter', self.unknown)} {_names(self.unknown)}")
        if self.missing:
            problems.append(f"needs {_plural('parameter', self.missing)} {_names(self.missing)}")
        what = " and ".join(problems) or "was given parameters it does not accept"
        if self.parameters:
            listed = ", ".join(parameter.describe() for parameter in self.parameters)
            known = f"; its parameters are: {listed}"
        else:
            known = "; it takes no parameters" if problems else ""
        super().__init__(f"{subject} {what}{known}")


def _plural(word: str, items: Sequence[str]) -> str:
    return word if len(items) == 1 else f"{word}s"


def _names(items: Sequence[str]) -> str:
    return ", ".join(repr(item) for item in items)


class BackendUnavailableError(SchedulingError):
    """The backend cannot be reached or does not answer properly.

    Attributes:
        backend: Which backend (for example the server's API URL).
        reason: What went wrong, as the backend or the network said it.
    """

    def __init__(
        self, backend: Optional[str] = None, reason: Optional[str] = None
    ) -> None:
        self.backend = backend
        self.reason = reason
        where = f" at {backend}" if backend else ""
        why = f": {reason}" if reason else ""
        super().__init__(f"scheduling backend{where} is unavailable{why}")


__all__ = [
    "BackendUnavailableError",
    "EmptyResultError",
    "FlowArchivedError",
    "FlowFailedError",
    "FlowNotFoundError",
    "FlowParameterError",
    "FlowRunCancelledError",
    "FlowRunNotFoundError",
    "FlowRunTimeoutError",
    "LocalBackendError",
    "SchedulingError",
    "TaskNotCompletedError",
    "TaskNotInFlowError",
]
