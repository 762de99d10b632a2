"""Warm workers: they never serve a stale flow, they start every run clean, and
``max_runs_per_worker`` recycles them.

Every test here runs on one worker (``max_workers=1``) and checks that the
same process served the runs, so what it shows is what a warm worker does.
"""

from __future__ import annotations

import datetime
import logging
import os
import resource
import signal
from typing import Any, Iterator, List, Tuple

import prefect
import pytest
from prefect import Flow, Parameter, Task, task
from prefect.engine.results import LocalResult

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.local._run_path import set_timer_slack, timer_slack
from lume_scheduling.domain import FlowRunState


@pytest.fixture
def one_worker() -> Iterator[LocalBackend]:
    with LocalBackend(max_workers=1) as backend:
        yield backend


def _pids(backend: LocalBackend) -> int:
    return backend._stats()["workers_started"]


# --------------------------------------------------------------- stale flows


@task(name="echo")
def echo(x: Any) -> Any:
    return x


@task(name="second_attempt")
def second_attempt() -> int:
    """Fails on its first run, succeeds on a retry."""
    count = prefect.context.get("task_run_count")
    if count < 2:
        raise RuntimeError("first attempt fails")
    return count


@task(name="listing")
def listing() -> List[str]:
    return sorted(os.listdir("."))


class Counter(Task):
    """A task that changes its own object each time it runs."""

    def __init__(self) -> None:
        super().__init__(name="counter")
        self.calls = 0

    def run(self) -> int:  # type: ignore[override]
        self.calls += 1
        return self.calls


def _enable_checkpointing(flow: Any, old: Any, new: Any) -> Any:
    if new.is_running():
        prefect.context.config.flows.checkpointing = True
    return new


def _say_handled(flow: Any, old: Any, new: Any) -> Any:
    if new.is_finished():
        new.message = "a flow state handler was here"
    return new


class TestNeverAStaleFlow:
    def test_an_unchanged_flow_goes_to_the_worker_once(self, one_worker: LocalBackend) -> None:
        with Flow("unchanged") as flow:
            echo(Parameter("x"))
        for x in range(4):
            assert one_worker.run_and_return({"x": x}, None, "echo", flow=flow) == x
        assert one_worker._stats()["flows_sent"] == 1
        assert _pids(one_worker) == 1

    def test_a_changed_parameter_default(self, one_worker: LocalBackend) -> None:
        with Flow("parameter-default") as flow:
            x = Parameter("x", default=1)
            echo(x)
        assert one_worker.run_and_return({}, None, "echo", flow=flow) == 1
        x.default = 2
        assert one_worker.run_and_return({}, None, "echo", flow=flow) == 2
        assert one_worker._stats()["flows_sent"] == 2 and _pids(one_worker) == 1

    def test_changed_task_retries(self, one_worker: LocalBackend) -> None:
        with Flow("task-retries") as flow:
            attempt = second_attempt()
        first = one_worker.submit({}, flow=flow)
        assert one_worker.wait(first, 60) is FlowRunState.FAILED
        attempt.max_retries = 1
        attempt.retry_delay = datetime.timedelta(seconds=0)
        assert one_worker.run_and_return({}, None, "second_attempt", flow=flow) == 2
        assert _pids(one_worker) == 1

    def test_a_renamed_task(self, one_worker: LocalBackend) -> None:
        with Flow("task-name") as flow:
            renamed = echo(Parameter("x"))
        assert one_worker.run_and_return({"x": 1}, None, "echo", flow=flow) == 1
        renamed.name = "renamed"
        assert one_worker.run_and_return({"x": 2}, None, "renamed", flow=flow) == 2
        assert _pids(one_worker) == 1

    def test_a_changed_task_result(self, one_worker: LocalBackend, tmp_path: Any) -> None:
        with Flow("task-result", state_handlers=[_enable_checkpointing]) as flow:
            kept = echo(Parameter("x"))
            listing(upstream_tasks=[kept])
        assert one_worker.run_and_return({"x": 1}, None, "listing", flow=flow, working_dir=str(tmp_path)) == []
        kept.result = LocalResult(dir=".", validate_dir=False, location="kept.txt")
        assert one_worker.run_and_return({"x": 1}, None, "listing", flow=flow, working_dir=str(tmp_path)) == [
            "kept.txt"
        ]
        assert _pids(one_worker) == 1

    def test_an_edge_moved_to_another_upstream_task(self, one_worker: LocalBackend) -> None:
        with Flow("edges") as flow:
            a, b = Parameter("a"), Parameter("b")
            target = echo(a)
            flow.add_task(b)
        assert one_worker.run_and_return({"a": "A", "b": "B"}, None, "echo", flow=flow) == "A"
        (edge,) = [edge for edge in flow.edges if edge.downstream_task is target]
        flow.edges.remove(edge)
        flow.add_edge(b, target, key="x")
        assert len(flow.edges) == 1  # same number of tasks and edges as before
        assert one_worker.run_and_return({"a": "A", "b": "B"}, None, "echo", flow=flow) == "B"
        assert _pids(one_worker) == 1

    def test_a_flow_that_gained_a_task(self, one_worker: LocalBackend) -> None:
        with Flow("growing") as flow:
            x = Parameter("x")
            echo(x)
        assert one_worker.run_and_return({"x": 1}, None, "echo", flow=flow) == 1
        with flow:
            echo(echo(x))
        assert one_worker.run_and_return({"x": 1}, None, "echo", flow=flow) == {
            "echo-1": 1,
            "echo-2": 1,
            "echo-3": 1,
        }
        assert _pids(one_worker) == 1

    def test_changed_flow_settings(self, one_worker: LocalBackend) -> None:
        with Flow("flow-settings") as flow:
            echo(Parameter("x"))
        first = one_worker.get_result(one_worker.submit({"x": 1}, flow=flow))
        assert first.message != "a flow state handler was here"
        flow.state_handlers.append(_say_handled)
        assert one_worker.get_result(one_worker.submit({"x": 1}, flow=flow)).message == (
            "a flow state handler was here"
        )
        flow.name = "renamed-flow"
        assert one_worker.get_result(one_worker.submit({"x": 1}, flow=flow)).flow_name == "renamed-flow"
        assert _pids(one_worker) == 1

    def test_what_a_run_did_to_its_flow_object_does_not_reach_the_next_run(
        self, one_worker: LocalBackend
    ) -> None:
        flow = Flow("self-changing", tasks=[Counter()])
        assert [one_worker.run_and_return({}, None, "counter", flow=flow) for _ in range(3)] == [1, 1, 1]
        assert _pids(one_worker) == 1


# -------------------------------------------------------------- clean process


@task(name="limits")
def limits(name: str) -> Tuple[int, int]:
    return resource.getrlimit(getattr(resource, name))


@task(name="set_limit")
def set_limit(name: str, soft: int, hard: int) -> int:
    resource.setrlimit(getattr(resource, name), (soft, hard))
    return os.getpid()


@task(name="set_limit_in_an_unprivileged_process")
def set_limit_in_an_unprivileged_process(name: str, soft: int) -> int:
    """Lowers a soft limit, then makes this process unable to raise limits
    again (as an unprivileged process is, for hard limits)."""
    number = getattr(resource, name)
    resource.setrlimit(number, (soft, resource.getrlimit(number)[1]))

    def refuse(*_: Any) -> None:
        raise ValueError("not allowed to raise the limit")

    resource.setrlimit = refuse
    return os.getpid()


@task(name="pid")
def pid() -> int:
    return os.getpid()


@task(name="signal_state")
def signal_state() -> Tuple[Any, Any, Any, Any, bool]:
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return (
        signal.getsignal(signal.SIGUSR1),
        signal.getsignal(signal.SIGUSR2),
        signal.getitimer(signal.ITIMER_REAL),
        signal.getitimer(signal.ITIMER_VIRTUAL),
        signal.SIGUSR1 in blocked,
    )


def _usr1_handler(signum: int, frame: Any) -> None:  # pragma: no cover - never delivered
    pass


@task(name="change_signals")
def change_signals() -> int:
    signal.signal(signal.SIGUSR1, _usr1_handler)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 600)
    signal.setitimer(signal.ITIMER_VIRTUAL, 600)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    return os.getpid()


@task(name="process_state")
def process_state() -> Tuple[int, int, int]:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask, len(logging.getLogger().handlers), len(logging.getLogger("prefect").handlers)


@task(name="change_process_state")
def change_process_state() -> int:
    os.umask(0o077)
    logging.getLogger().addHandler(logging.StreamHandler())
    logging.getLogger("prefect").addHandler(logging.NullHandler())
    return os.getpid()


@task(name="read_timer_slack")
def read_timer_slack() -> Any:
    return timer_slack()


@task(name="change_timer_slack")
def change_timer_slack() -> int:
    assert set_timer_slack(250_000)
    return os.getpid()


@task(name="read_env_var")
def read_env_var(name: str) -> str:
    return os.environ.get(name, "unset")


@task(name="set_env_var")
def set_env_var(name: str) -> int:
    os.environ[name] = "set by a task"
    return os.getpid()


def _one_task_flow(flow_name: str, task_obj: Any, *parameters: str) -> Flow:
    """A flow of one task whose arguments are the parameters named."""
    with Flow(flow_name) as flow:
        task_obj(**{name: Parameter(name) for name in parameters})
    return flow


class TestEveryRunStartsClean:
    def test_a_resource_limit_set_by_a_run_is_gone_for_the_next(self, one_worker: LocalBackend) -> None:
        read = _one_task_flow("read-limit", limits, "name")
        change = _one_task_flow("set-limit", set_limit, "name", "soft", "hard")
        before = one_worker.run_and_return({"name": "RLIMIT_AS"}, None, "limits", flow=read)
        soft = 64 * 2**30 if before[1] == resource.RLIM_INFINITY else before[1] // 2
        worker = one_worker.run_and_return(
            {"name": "RLIMIT_AS", "soft": soft, "hard": before[1]}, None, "set_limit", flow=change
        )
        assert tuple(one_worker.run_and_return({"name": "RLIMIT_AS"}, None, "limits", flow=read)) == tuple(before)
        assert one_worker.run_and_return({}, None, "pid", flow=_one_task_flow("pid", pid)) == worker

    def test_a_lowered_hard_limit_is_put_back_or_the_worker_retires(self, one_worker: LocalBackend) -> None:
        read = _one_task_flow("read-limit", limits, "name")
        before = one_worker.run_and_return({"name": "RLIMIT_CORE"}, None, "limits", flow=read)
        lowered = before[0] if before[0] != resource.RLIM_INFINITY else 2**20
        worker = one_worker.run_and_return(
            {"name": "RLIMIT_CORE", "soft": lowered, "hard": lowered},
            None,
            "set_limit",
            flow=_one_task_flow("lower-hard-limit", set_limit, "name", "soft", "hard"),
        )
        assert tuple(one_worker.run_and_return({"name": "RLIMIT_CORE"}, None, "limits", flow=read)) == tuple(before)
        if os.geteuid() != 0:  # only a privileged process can raise a hard limit again
            assert one_worker.run_and_return({}, None, "pid", flow=_one_task_flow("pid", pid)) != worker

    def test_a_worker_that_cannot_put_a_limit_back_retires_after_its_run(self, one_worker: LocalBackend) -> None:
        read = _one_task_flow("read-limit", limits, "name")
        before = one_worker.run_and_return({"name": "RLIMIT_NOFILE"}, None, "limits", flow=read)
        run = one_worker.submit(
            {"name": "RLIMIT_NOFILE", "soft": before[0] - 1},
            flow=_one_task_flow("cannot-put-back", set_limit_in_an_unprivileged_process, "name", "soft"),
        )
        assert one_worker.wait(run, 60) is FlowRunState.SUCCESS  # the run itself is fine
        worker = one_worker.result(run, "set_limit_in_an_unprivileged_process")
        assert one_worker.run_and_return({}, None, "pid", flow=_one_task_flow("pid", pid)) != worker
        assert tuple(one_worker.run_and_return({"name": "RLIMIT_NOFILE"}, None, "limits", flow=read)) == tuple(before)
        assert _pids(one_worker) == 2

    def test_signal_handlers_timers_and_the_mask_set_by_a_run_are_gone_for_the_next(
        self, one_worker: LocalBackend
    ) -> None:
        read = _one_task_flow("signal-state", signal_state)
        before = one_worker.run_and_return({}, None, "signal_state", flow=read)
        assert before[2] == (0.0, 0.0) and before[4] is False
        worker = one_worker.run_and_return({}, None, "change_signals", flow=_one_task_flow("signals", change_signals))
        assert one_worker.run_and_return({}, None, "signal_state", flow=read) == before
        assert one_worker.run_and_return({}, None, "pid", flow=_one_task_flow("pid", pid)) == worker

    @pytest.mark.skipif(timer_slack() is None, reason="timer slack is a Linux setting")
    def test_timers_are_precise_and_a_timer_slack_set_by_a_run_is_gone_for_the_next(
        self, one_worker: LocalBackend
    ) -> None:
        read = _one_task_flow("timer-slack", read_timer_slack)
        assert one_worker.run_and_return({}, None, "read_timer_slack", flow=read) == 1
        worker = one_worker.run_and_return(
            {}, None, "change_timer_slack", flow=_one_task_flow("set-slack", change_timer_slack)
        )
        assert one_worker.run_and_return({}, None, "read_timer_slack", flow=read) == 1
        assert one_worker.run_and_return({}, None, "pid", flow=_one_task_flow("pid", pid)) == worker

    def test_a_variable_a_task_set_in_os_environ_is_gone_for_the_next_run(self, one_worker: LocalBackend) -> None:
        # The same environ sent twice: the worker must still notice what the run changed.
        read = _one_task_flow("read-env", read_env_var, "name")
        name = "LUME_SET_BY_A_TASK"
        assert one_worker.run_and_return({"name": name}, None, "read_env_var", flow=read) == "unset"
        worker = one_worker.run_and_return(
            {"name": name}, None, "set_env_var", flow=_one_task_flow("set-env", set_env_var, "name")
        )
        assert one_worker.run_and_return({"name": name}, None, "read_env_var", flow=read) == "unset"
        assert one_worker.run_and_return({}, None, "pid", flow=_one_task_flow("pid", pid)) == worker

    def test_the_umask_and_log_handlers_set_by_a_run_are_gone_for_the_next(
        self, one_worker: LocalBackend
    ) -> None:
        read = _one_task_flow("process-state", process_state)
        before = one_worker.run_and_return({}, None, "process_state", flow=read)
        worker = one_worker.run_and_return(
            {}, None, "change_process_state", flow=_one_task_flow("change", change_process_state)
        )
        assert one_worker.run_and_return({}, None, "process_state", flow=read) == before
        assert one_worker.run_and_return({}, None, "pid", flow=_one_task_flow("pid", pid)) == worker


# --------------------------------------------------------- max_runs_per_worker


class TestMaxRunsPerWorker:
    def test_one_gives_every_run_a_fresh_process(self) -> None:
        flow = _one_task_flow("pid", pid)
        with LocalBackend(max_workers=1, max_runs_per_worker=1) as backend:
            pids = [backend.run_and_return({}, None, "pid", flow=flow) for _ in range(3)]
            assert len(set(pids)) == 3
            assert backend._stats()["workers_started"] == 3
            assert backend.max_runs_per_worker == 1

    def test_a_worker_serves_that_many_runs(self) -> None:
        flow = _one_task_flow("pid", pid)
        with LocalBackend(max_workers=1, max_runs_per_worker=2) as backend:
            pids = [backend.run_and_return({}, None, "pid", flow=flow) for _ in range(5)]
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]

    def test_the_default_keeps_workers(self, one_worker: LocalBackend) -> None:
        flow = _one_task_flow("pid", pid)
        assert len({one_worker.run_and_return({}, None, "pid", flow=flow) for _ in range(4)}) == 1
        assert one_worker.max_runs_per_worker is None

    def test_concurrent_runs_with_recycled_workers_all_succeed(self) -> None:
        flow = _one_task_flow("pid", pid)
        with LocalBackend(max_workers=2, max_runs_per_worker=1) as backend:
            ids = [backend.submit({}, flow=flow) for _ in range(6)]
            pids = [backend.result(flow_run_id, "pid") for flow_run_id in ids]
        assert len(set(pids)) == 6

    @pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
    def test_a_value_that_is_not_a_positive_integer_is_refused(self, value: Any) -> None:
        with pytest.raises(ValueError, match="max_runs_per_worker must be a positive integer"):
            LocalBackend(max_runs_per_worker=value)

    def test_it_applies_to_isolated_runs_only(self) -> None:
        with pytest.raises(ValueError, match="max_runs_per_worker applies to isolated runs only"):
            LocalBackend(isolated=False, max_runs_per_worker=3)


# ----------------------------------------------------------- fork_first_worker

FORK_FIRST_SCRIPT = '''
import fcntl, json, os, sys

from prefect import Flow, Parameter, task

from lume_scheduling.adapters.local import LocalBackend


def end(fd):
    """A pipe or socket end: its inode and access mode (both ends of a pipe
    share the inode)."""
    return [os.fstat(fd).st_ino, fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE]


@task(name="where")
def where(ends):
    from lume_scheduling.adapters.local import _fast_context
    held = []
    for name in os.listdir("/proc/self/fd"):
        try:
            held.append(end(int(name)))
        except OSError:
            pass
    return [os.getpid(), os.getppid(), _fast_context.is_active(), [e for e in ends if e in held]]


with Flow("where") as flow:
    where(Parameter("ends"))

if __name__ == "__main__":
    backend = LocalBackend(max_workers=1, fork_first_worker=True)
    runtime = backend._runtime
    first = backend.run_and_return({"ends": []}, None, "where", flow=flow)
    # This process's ends of the backend's pipes: the worker must hold none
    # (or it would never read EOF on its pipe, nor notice this process dying).
    ends = [end(item.fileno()) for item in (runtime._workers[0].conn, runtime._alive_w, runtime._wake_r, runtime._wake_w)]
    second = backend.run_and_return({"ends": ends}, None, "where", flow=flow)
    print(json.dumps({"caller": os.getpid(), "first": first, "second": second}))
    sys.stdout.flush()
    if sys.argv[1] == "kill-the-caller":
        os.kill(os.getpid(), 9)  # the worker must notice and exit
    backend.close()
'''


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class TestForkFirstWorker:
    def _run(self, tmp_path: Any, mode: str) -> Any:
        import json
        import subprocess
        import sys

        script = tmp_path / "fork_first.py"
        script.write_text(FORK_FIRST_SCRIPT, encoding="utf-8")
        done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=120)
        return json.loads(done.stdout.strip().splitlines()[-1])

    def test_the_first_worker_is_a_fork_of_the_caller_with_the_fast_path_on(self, tmp_path: Any) -> None:
        report = self._run(tmp_path, "close")
        worker, parent, fast, _ = report["first"]
        assert parent == report["caller"] != worker
        assert fast is True
        assert report["second"][0] == worker  # the same warm worker
        assert report["second"][3] == []  # it holds none of the caller's pipe ends

    def test_a_worker_forked_from_the_caller_exits_when_the_caller_is_killed(self, tmp_path: Any) -> None:
        import time

        report = self._run(tmp_path, "kill-the-caller")
        worker = report["first"][0]
        deadline = time.monotonic() + 30
        while _pid_alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(worker), "the worker outlived its caller"

    def test_it_applies_to_isolated_runs_only_and_is_a_bool(self) -> None:
        with pytest.raises(ValueError, match="fork_first_worker applies to isolated runs only"):
            LocalBackend(isolated=False, fork_first_worker=True)
        with pytest.raises(TypeError, match="fork_first_worker must be True or False"):
            LocalBackend(fork_first_worker="yes")  # type: ignore[arg-type]

    def test_off_by_default_workers_come_from_the_fork_server(self, one_worker: LocalBackend) -> None:
        assert one_worker.run_and_return({}, None, "parent", flow=_one_task_flow("parent", parent_pid)) != os.getpid()


@task(name="parent")
def parent_pid() -> int:
    return os.getppid()
