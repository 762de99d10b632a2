"""Fixtures and flows for the local backend's tests.

The flows here live in a module that worker processes cannot import (pytest
loads it by path), so sending them exercises the by-value pickling path too.
Every test checks afterwards that no worker process or helper thread is left.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Iterator, List

import prefect
import pytest
from prefect import Flow, Parameter, task

from lume_scheduling.adapters.local import LocalBackend


@task(name="exit_interpreter")
def exit_interpreter(code: int) -> None:
    """Ends the interpreter at once, as a crashing native library would."""
    os._exit(code)


@task(name="segfault")
def segfault() -> None:
    """Kills its own process with SIGSEGV."""
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)


@task(name="pid")
def pid() -> int:
    """The id of the process the task runs in."""
    return os.getpid()


@task(name="sleep_then_echo")
def sleep_then_echo(seconds: float, value: int) -> int:
    """Sleeps, then returns ``value``."""
    time.sleep(seconds)
    return value


@task(name="log_lines")
def log_lines(secret_name: str) -> str:
    """Logs through Prefect's logger and a plain one, including the secret env value."""
    secret = os.environ[secret_name]
    prefect.context.get("logger").info("prefect logger says hello")
    logging.getLogger("user.module").warning("user logger sees %s", secret)
    logging.getLogger("user.module").debug("debug line with %s", secret)
    return "logged"


@task(name="start_child")
def start_child(pid_file: str) -> None:
    """Starts a long subprocess, writes its pid, then hangs."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(pid_file, "w", encoding="utf-8") as handle:
        handle.write(str(child.pid))
    time.sleep(60)


@task(name="increment")
def increment(x: int) -> int:
    """x + 1."""
    return x + 1


@task(name="unpicklable_value")
def unpicklable_value() -> object:
    """Returns a lock, which cannot be pickled."""
    return threading.Lock()


@task(name="env_after_pause")
def env_after_pause(name: str, pause: float) -> str:
    """Reads env var ``name`` after a pause (to overlap with other runs)."""
    time.sleep(pause)
    return os.environ.get(name, "")


with Flow("crash-exit") as crash_exit_flow:
    exit_interpreter(Parameter("code", default=1))

with Flow("crash-segfault") as crash_segfault_flow:
    segfault()

with Flow("pid") as pid_flow:
    pid()

with Flow("increment") as increment_flow:
    increment(Parameter("x"))

with Flow("sleepy") as sleepy_flow:
    sleep_then_echo(Parameter("seconds", default=0.0), Parameter("value", default=0))

with Flow("logging") as logging_flow:
    log_lines(Parameter("secret_name", default="LUME_TEST_SECRET"))

with Flow("child-process") as child_process_flow:
    start_child(Parameter("pid_file"))

with Flow("unpicklable-result") as unpicklable_result_flow:
    unpicklable_value()

with Flow("env-after-pause") as env_after_pause_flow:
    env_after_pause(Parameter("name"), Parameter("pause", default=0.2))


@pytest.fixture
def local_flows() -> SimpleNamespace:
    """The flows above, by short name."""
    return SimpleNamespace(
        crash_exit=crash_exit_flow,
        crash_segfault=crash_segfault_flow,
        pid=pid_flow,
        increment=increment_flow,
        sleepy=sleepy_flow,
        logging=logging_flow,
        child_process=child_process_flow,
        unpicklable_result=unpicklable_result_flow,
        env_after_pause=env_after_pause_flow,
    )


def _helper_threads() -> List[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("lume-local")]


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    """After each test (and its fixtures' teardown): no worker process, no helper thread."""
    yield
    deadline = time.monotonic() + 5
    while (multiprocessing.active_children() or _helper_threads()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert multiprocessing.active_children() == []
    assert _helper_threads() == []


@pytest.fixture
def isolated() -> Iterator[LocalBackend]:
    """An isolated local backend with two workers."""
    with LocalBackend(max_workers=2) as backend:
        yield backend


@pytest.fixture
def in_process() -> Iterator[LocalBackend]:
    """An in-process local backend."""
    with LocalBackend(max_workers=2, isolated=False) as backend:
        yield backend


@pytest.fixture(params=["isolated", "in-process"])
def backend(request: pytest.FixtureRequest) -> Iterator[LocalBackend]:
    """Each execution mode in turn."""
    with LocalBackend(max_workers=2, isolated=request.param == "isolated") as backend:
        yield backend
