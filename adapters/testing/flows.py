"""Small Prefect 1 flows with known results, defined at module level so every
backend can run them: passed as objects, sent to worker processes, or loaded by
an agent from Module storage (``lume_scheduling.adapters.testing.flows``).

Task names are chosen to exercise the selection rule: ``add`` must never pick
``add_more`` (the original matched substrings of slugs).
"""

from __future__ import annotations

import os
import time
from typing import Any, List, Optional

import prefect
from prefect import Flow, Parameter, task
from prefect.engine.results import PrefectResult
from prefect.storage import Module
from prefect.triggers import always_run

MODULE = __name__


@task(name="add")
def add(x: float, y: float) -> float:
    """x + y."""
    return x + y


@task(name="add_more")
def add_more(total: float, extra: float = 10) -> float:
    """total + extra."""
    return total + extra


@task(name="multiply")
def multiply(x: float, y: float) -> float:
    """x * y."""
    return x * y


@task(name="double")
def double(x: float) -> float:
    """2 * x."""
    return 2 * x


@task(name="explode")
def explode(message: str) -> None:
    """Always fails with ValueError(message)."""
    raise ValueError(message)


@task(name="nothing")
def nothing() -> None:
    """Returns no value."""
    return None


@task(name="hang")
def hang(seconds: float) -> str:
    """Sleeps ``seconds`` in short steps, then returns "woke"."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return "woke"


@task(name="read_env")
def read_env(name: str) -> Optional[str]:
    """The value of environment variable ``name`` inside the run."""
    return os.environ.get(name)


@task(name="working_dir")
def working_dir() -> str:
    """The directory the task runs in."""
    return os.getcwd()


@task(name="tidy_up", trigger=always_run)
def tidy_up() -> str:
    """Runs whatever happened upstream; returns "tidied"."""
    return "tidied"


@task(name="square")
def square(x: float) -> float:
    """x * x."""
    return x * x


@task(name="configure_lume_services")
def configure_lume_services() -> None:
    """Stands in for lume-services' task of this name: returns nothing."""
    return None


@task(name="append_text")
def append_text(text1: str, text2: str) -> str:
    """text1 + text2 (lume-services' test flow ``flow1``)."""
    return text1 + text2


@task(name="save_text_file")
def save_text_file(obj: str, filename: str, filesystem_identifier: str) -> dict:
    """Writes ``obj`` to ``filename``; returns the file's description, as
    lume-services' ``SaveFile`` task returns a file's ``jsonable_dict()``."""
    with open(filename, "w", encoding="utf-8") as text_file:
        text_file.write(obj)
    return {"filename": filename, "filesystem_identifier": filesystem_identifier, "file_type": "TextFile"}


@task(name="chatter")
def chatter(lines: int) -> int:
    """Logs ``lines`` numbered lines through prefect's logger; returns how many."""
    logger = prefect.context.get("logger")
    for number in range(lines):
        logger.info("chatter line %03d of %d", number, lines)
    return lines


@task(name="failure_task")
def failure_task() -> None:
    """Fails with an AssertionError (lume-services' ``failure_flow``)."""
    assert 1 == 2


def _flow(name: str) -> Flow:
    # PrefectResult keeps each task's value in the server's database, so a real
    # Prefect Server agent leaves values the backends can read back.
    return Flow(name, storage=Module(MODULE), result=PrefectResult())


# arithmetic: x=1, y=2 -> add=3, add_more=13, multiply=2
with _flow("arithmetic") as arithmetic_flow:
    _x = Parameter("x", default=1)
    _y = Parameter("y", default=2)
    _sum = add(_x, _y)
    add_more(_sum)
    multiply(_x, _y)

# arithmetic again, without a result type: on a real Prefect Server its task
# values are not kept, so reading them back gives empty results
with Flow("arithmetic-unkept", storage=Module(MODULE)) as unkept_flow:
    _x = Parameter("x", default=1)
    _y = Parameter("y", default=2)
    add_more(add(_x, _y))

# two tasks named "double" (slugs double-1, double-2): x=3 -> 6 and 12
with _flow("twin") as twin_flow:
    _first = double(Parameter("x", default=3))
    double(_first)

# fails in task "explode" with ValueError("kaboom")
with _flow("failing") as failing_flow:
    explode(Parameter("message", default="kaboom"))

# task "nothing" finishes without a value
with _flow("empty") as empty_flow:
    nothing()

# task "hang" sleeps `seconds` (default 60) before returning "woke"
with _flow("hanging") as hanging_flow:
    hang(Parameter("seconds", default=60.0))

# what a run sees: read_env(name) and working_dir()
with _flow("environment") as environment_flow:
    read_env(Parameter("name", default="LUME_SCHEDULING_EXAMPLE"))
    working_dir()

# square mapped over `values` (default [1, 2, 3]) -> [1, 4, 9]
with _flow("mapped") as mapped_flow:
    square.map(Parameter("values", default=[1, 2, 3]))

# a required parameter: x (no default) -> double = 2 * x; scale defaults to 1
with _flow("required") as required_flow:
    multiply(double(Parameter("x")), Parameter("scale", default=1))

# task "explode" fails with ValueError("kaboom"), then "tidy_up" runs anyway and
# returns "tidied"; the flow run succeeds (its only terminal task did)
with _flow("partly_failing") as partly_failing_flow:
    tidy_up(upstream_tasks=[explode(Parameter("message", default="kaboom"))])

# lume-services' test flows, by their names and task names: "flow1" appends
# text1 and text2, saves the text to `filename` (save_text_file returns a dict)
# after configure_lume_services, which returns nothing; "failure_flow" fails.
with _flow("flow1") as lume_services_flow:
    _configure = configure_lume_services()
    _text = append_text(Parameter("text1"), Parameter("text2"))
    _file = save_text_file(_text, Parameter("filename"), Parameter("filesystem_identifier"))
    _file.set_upstream(_configure)

with _flow("failure_flow") as lume_services_failure_flow:
    failure_task()

# task "chatter" logs `lines` (default 40) numbered lines and returns their number
with _flow("chatty") as chatty_flow:
    chatter(Parameter("lines", default=40))

EXAMPLE_FLOWS: List[Flow] = [
    arithmetic_flow,
    unkept_flow,
    twin_flow,
    failing_flow,
    empty_flow,
    hanging_flow,
    environment_flow,
    mapped_flow,
    partly_failing_flow,
    lume_services_flow,
    lume_services_failure_flow,
    required_flow,
    chatty_flow,
]


def flow_by_name(name: str) -> Any:
    """The example flow called ``name`` (for agents loading Module storage)."""
    for flow in EXAMPLE_FLOWS:
        if flow.name == name:
            return flow
    raise KeyError(name)
