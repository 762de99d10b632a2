"""A real Dask cluster for the Dask backend's tests, and flows that tell where they ran.

One ``distributed.LocalCluster`` (two worker processes under nannies, one
thread each) serves each test module and is closed after it: starting one
takes a second or two, and a cluster kept for the whole session would leave
its worker processes behind for the leak checks of the tests that follow.
Nothing here skips: distributed is a dependency of lume-scheduling, so a
cluster that cannot start is a failure, in CI and everywhere else.

The flows live in this module, which Dask workers cannot import (pytest loads
it by path), so sending them exercises the by-value pickling path too.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, List

import prefect
import psutil
import pytest
from distributed import LocalCluster
from prefect import Flow, Parameter, task

from lume_scheduling.adapters.dask import DaskBackend

SETTLE = 60.0


@task(name="pid_then_hang")
def pid_then_hang(pid_file: str, seconds: float) -> None:
    """Writes the id of the process it runs in, then sleeps."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)


@task(name="where")
def where() -> dict:
    """The process and directory the task runs in, and one env variable."""
    return {"pid": os.getpid(), "cwd": os.getcwd(), "token": os.environ.get("LUME_DASK_TOKEN")}


@task(name="echo")
def echo(x: int) -> int:
    """x."""
    return x


@task(name="warn")
def warn(text: str) -> str:
    """Logs ``text`` at WARNING through Prefect's logger, and returns it."""
    prefect.context.get("logger").warning("the flow says %s", text)
    return text


with Flow("dask-pid-then-hang") as pid_then_hang_flow:
    pid_then_hang(Parameter("pid_file"), Parameter("seconds", default=60.0))

with Flow("dask-where") as where_flow:
    where()

with Flow("dask-echo") as echo_flow:
    echo(Parameter("x"))

with Flow("dask-warn") as warn_flow:
    warn(Parameter("text"))


def wait_for_file(path: Path, timeout: float = SETTLE) -> str:
    """The text of ``path`` once it exists and is not empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written within {timeout} s")


def wait_for_state(backend: Any, flow_run_id: str, state: Any, timeout: float = SETTLE) -> bool:
    """Whether the run reaches ``state`` within ``timeout`` (RUNNING is reported
    once the worker's start message has reached the scheduler: moments after
    the flow started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if backend.get_state(flow_run_id) is state:
            return True
        time.sleep(0.02)
    return False


def wait_until_gone(pid: int, timeout: float = SETTLE) -> None:
    """Until process ``pid`` no longer exists (a zombie counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} is still alive {timeout} s later")


def descendants() -> List[int]:
    """Pids of every live descendant of this process."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def make_cluster(**kwargs: Any) -> LocalCluster:
    """A LocalCluster as the embedded backend makes it (processes, one thread each)."""
    options = {
        "n_workers": 2,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": ":0"},
    }
    options.update(kwargs)
    return LocalCluster(**options)


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[LocalCluster]:
    """The test module's cluster: two workers, one thread each (closed after the
    module: its worker processes are children of this process, which the leak
    checks of the other test directories would count)."""
    cluster = make_cluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def backend(dask_cluster: LocalCluster) -> Iterator[DaskBackend]:
    """A backend on the module's cluster (closing it leaves the cluster up)."""
    with DaskBackend(cluster=dask_cluster) as backend:
        yield backend


@pytest.fixture
def dask_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Records of the logger the backend re-emits the runs' records on."""
    caplog.set_level(logging.WARNING, logger="lume_scheduling.dask")
    return caplog
