"""What each query asks of a Prefect Server's answer, checked in one place.

Every GraphQL answer passes `envelope` (a JSON object with a ``data`` object, or
with ``errors``: a non-empty list of objects that have a string ``message``), then
the shape its query expects (`Fields`, `ListOf`, `Nullable`, `STATE`...). An
answer of another shape raises `MalformedAnswer`, which says where the answer
went wrong and what was expected there; `ServerBackend` adds the server and the
operation. The code that reads an answer checked here needs no guard of its own:
no KeyError, AttributeError, IndexError or marshmallow error can come out of it.

Only the kind of a wrong value is quoted (``got a string``), never the value
itself: an answer may hold a run's env values.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import pendulum
from prefect.engine import state as prefect_state

from lume_scheduling.domain import BackendUnavailableError


class MalformedAnswer(BackendUnavailableError):
    """An answer that is not what its query asked for.

    Raised by the checks of this module, which know neither the server nor the
    operation; `ServerBackend` raises a `BackendUnavailableError` naming both
    instead. It is a `BackendUnavailableError` itself, so that even one that is not
    re-raised crosses the port as a domain error.

    Attributes:
        problem: Where the answer went wrong and what was expected there.
        path: That place (``data.flow_run_by_pk.serialized_state``), when known.
        wrong_kind: The value there is of the wrong JSON kind (not merely wrong
            inside).
    """

    def __init__(self, problem: str = "", path: Optional[str] = None, wrong_kind: bool = False) -> None:
        self.problem = problem
        self.path = path
        self.wrong_kind = wrong_kind
        super().__init__(None, f"the server's answer is malformed: {problem}")


def kind_of(value: Any) -> str:
    """The JSON kind of ``value``, for an error message (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, Mapping):
        return "an empty object" if not value else "an object"
    if isinstance(value, (list, tuple)):
        return "an empty list" if not value else f"a list of {len(value)}"
    return type(value).__name__


class Shape:
    """What one place of an answer must hold.

    Attributes:
        expected: The same in words, for the error message ("a string or null").
    """

    expected = "anything"

    def check(self, value: Any, path: str) -> None:
        """Raise `MalformedAnswer` naming ``path`` unless ``value`` fits."""

    def _wrong(self, value: Any, path: str) -> MalformedAnswer:
        return MalformedAnswer(f"{path}: expected {self.expected}, got {kind_of(value)}", path, wrong_kind=True)


class _Scalar(Shape):
    def __init__(self, expected: str, *types: type) -> None:
        self.expected = expected
        self._types = types

    def check(self, value: Any, path: str) -> None:
        # JSON true is no integer, whatever Python says.
        if isinstance(value, bool) and bool not in self._types:
            raise self._wrong(value, path)
        if not isinstance(value, self._types):
            raise self._wrong(value, path)


STRING: Shape = _Scalar("a string", str)
INT: Shape = _Scalar("an integer", int)
BOOL: Shape = _Scalar("a boolean", bool)
OBJECT: Shape = _Scalar("an object", dict)
ANY: Shape = Shape()


class Nullable(Shape):
    """``inner``, or null."""

    def __init__(self, inner: Shape) -> None:
        self.inner = inner
        self.expected = f"{inner.expected} or null"

    def check(self, value: Any, path: str) -> None:
        if value is None:
            return
        try:
            self.inner.check(value, path)
        except MalformedAnswer as err:
            if err.wrong_kind and err.path == path:
                raise self._wrong(value, path) from None  # say that null would do too
            raise


class ListOf(Shape):
    """A list whose every item is ``item``."""

    def __init__(self, item: Shape) -> None:
        self.item = item
        self.expected = "a list"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise self._wrong(value, path)
        for index, entry in enumerate(value):
            self.item.check(entry, f"{path}[{index}]")


class Maybe:
    """A field that may be left out of an object (checked as ``inner`` when present)."""

    def __init__(self, inner: Shape) -> None:
        self.inner = inner


class Fields(Shape):
    """An object with each of these fields (other fields are let through).

    Args:
        **fields: The shape of each field; a field whose shape is wrapped in
            `Maybe` may be missing.
    """

    def __init__(self, **fields: Any) -> None:
        self.fields: Dict[str, Any] = fields
        self.expected = "an object"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise self._wrong(value, path)
        for name, shape in self.fields.items():
            where = f"{path}.{name}"
            if isinstance(shape, Maybe):
                if name in value:
                    shape.inner.check(value[name], where)
                continue
            if name not in value:
                raise MalformedAnswer(f"{where}: expected {shape.expected}, but the field is missing")
            shape.check(value[name], where)


class StringMap(Shape):
    """An object whose values are all strings (a run config's ``env``)."""

    expected = "an object of strings"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise self._wrong(value, path)
        for name, entry in value.items():
            if not isinstance(entry, str):
                raise MalformedAnswer(f"{path}.{name}: expected a string, got {kind_of(entry)}")


class _State(Shape):
    """A serialized Prefect state (``serialized_state``) that prefect can read back."""

    expected = "a serialized Prefect state"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise self._wrong(value, path)
        type_name = value.get("type")
        if not isinstance(type_name, str):
            raise MalformedAnswer(f"{path}.type: expected the name of a Prefect state, got {kind_of(type_name)}")
        if not isinstance(getattr(prefect_state, type_name, None), type):
            shown = type_name if len(type_name) <= 40 else type_name[:40] + "..."
            raise MalformedAnswer(f"{path}.type: expected the name of a Prefect state, got {shown!r}")
        try:
            state = prefect_state.State.deserialize(dict(value))
        except Exception as err:  # marshmallow raises several types for a bad document
            raise MalformedAnswer(f"{path}: {self.expected} that prefect can read, got one it cannot ({type(err).__name__})") from None
        if not isinstance(state, prefect_state.State):
            raise self._wrong(value, path)


STATE: Shape = _State()


class _Timestamp(Shape):
    """A timestamp the server wrote (``agent.last_queried``), which pendulum can read."""

    expected = "a timestamp"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise self._wrong(value, path)
        try:
            parsed = pendulum.parse(value)
        except Exception:  # pendulum raises several types for a bad text
            raise MalformedAnswer(f"{path}: expected a timestamp, got a string that is none") from None
        if not isinstance(parsed, pendulum.DateTime):
            raise MalformedAnswer(f"{path}: expected a timestamp, got a string that is none")


TIMESTAMP: Shape = _Timestamp()


def envelope(answer: Any) -> Tuple[Optional[Dict[str, Any]], Optional[List[Dict[str, Any]]]]:
    """The ``data`` and the ``errors`` of a GraphQL answer, as the GraphQL spec shapes them.

    Returns:
        ``(data, None)`` for an answer without errors, ``(None, errors)`` for one
        with errors (a non-empty list of objects with a string ``message``).

    Raises:
        MalformedAnswer: The answer is not a JSON object; its ``errors`` are not
            such a list; it has no errors and its ``data`` is not an object.
    """
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"the answer: expected a JSON object, got {kind_of(answer)}")
    if "errors" in answer:
        errors = answer["errors"]
        if not isinstance(errors, list) or not errors:
            raise MalformedAnswer(f"errors: expected a non-empty list of errors, got {kind_of(errors)}")
        for index, error in enumerate(errors):
            Fields(message=STRING).check(error, f"errors[{index}]")
        return None, errors
    data = answer.get("data")
    if not isinstance(data, dict):
        raise MalformedAnswer(f"data: expected an object, got {kind_of(data)}")
    return data, None


def read(data: Dict[str, Any], shape: Shape) -> Dict[str, Any]:
    """``data`` (an answer's ``data`` object), once it fits ``shape``.

    Raises:
        MalformedAnswer: It does not, naming where and what was expected.
    """
    shape.check(data, "data")
    return data


# ----------------------------------------------------- the answers we read

ID = Fields(id=STRING)
PROJECT_NAME = Nullable(Fields(name=STRING))
RUN_CONFIG = Nullable(Fields(image=Maybe(Nullable(STRING)), env=Maybe(Nullable(StringMap()))))
TASK_RUN = Fields(
    id=STRING,
    map_index=INT,
    serialized_state=Nullable(STATE),
    task=Nullable(Fields(slug=STRING, name=Nullable(STRING))),
)
LOG = Fields(id=STRING, created=STRING, timestamp=STRING, level=Nullable(STRING), message=Nullable(STRING))
# What the server wrote about a run's process (see backend._CRASH_FIELDS): how
# often Lazarus rescheduled it, and a task run the zombie killer failed.
_CRASH = dict(times_resurrected=Nullable(INT), lost_task_runs=ListOf(Fields(state_message=Nullable(STRING))))
_RUN = dict(
    id=STRING,
    flow_id=STRING,
    serialized_state=Nullable(STATE),
    flow=Nullable(Fields(name=STRING, project=PROJECT_NAME)),
    **_CRASH,
)

# client: the tenant, projects, registration, flow runs, cancel
TENANTS = Fields(tenant=ListOf(ID))
PROJECTS = Fields(project=ListOf(ID))
CREATED_PROJECT = Fields(create_project=ID)
CREATED_FLOW = Fields(create_flow_from_compressed_string=ID)
REGISTERED_TASKS = Fields(register_tasks=Fields(success=Nullable(BOOL)))
REGISTERED_EDGES = Fields(register_edges=Fields(success=Nullable(BOOL)))
SCHEDULE_SET = Fields(set_schedule_active=Fields(success=Nullable(BOOL)))
CREATED_FLOW_RUN = Fields(create_flow_run=ID)
CANCELLED = Fields(cancel_flow_run=Fields(state=Nullable(STRING)))

# backend: flows
FLOW_GROUP_ID = Fields(flow_by_pk=Nullable(Fields(flow_group_id=STRING)))
LOADED_FLOWS = Fields(
    flow=ListOf(Fields(id=STRING, name=STRING, serialized_flow=OBJECT, run_config=RUN_CONFIG, project=PROJECT_NAME))
)
FLOW_INFO = Fields(
    flow_by_pk=Nullable(Fields(id=STRING, name=STRING, run_config=RUN_CONFIG, serialized_flow=OBJECT, project=PROJECT_NAME))
)
DEFAULT_PARAMETERS = Fields(flow_by_pk=Nullable(Fields(flow_group=Nullable(Fields(default_parameters=Nullable(OBJECT))))))
NEWEST_VERSION = Fields(
    flow_by_pk=Nullable(
        Fields(
            version=Nullable(INT),
            flow_group=Nullable(Fields(flows=ListOf(Fields(id=STRING, version=Nullable(INT))))),
        )
    )
)

# backend: flow runs
RUN_STATE = Fields(flow_run_by_pk=Nullable(Fields(serialized_state=Nullable(STATE), **_CRASH)))
POLLED_RUN = Fields(
    flow_run_by_pk=Nullable(
        Fields(**_RUN, labels=Nullable(ListOf(STRING)), logs=ListOf(LOG), task_runs=ListOf(TASK_RUN))
    )
)
AGENTS = Fields(
    agent=ListOf(Fields(id=STRING, name=Nullable(STRING), labels=Nullable(ListOf(STRING)), last_queried=Nullable(TIMESTAMP)))
)
RUN_RESULT = Fields(flow_run_by_pk=Nullable(Fields(**_RUN, task_runs=ListOf(TASK_RUN))))
TASK_RUN_PAGE = Fields(task_run=ListOf(TASK_RUN))
RUN_LOGS = Fields(flow_run_by_pk=Nullable(Fields(logs=ListOf(LOG))))
RUN_CONFIG_OF_RUN = Fields(flow_run_by_pk=Nullable(Fields(run_config=RUN_CONFIG)))
