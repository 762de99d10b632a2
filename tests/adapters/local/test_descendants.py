"""No process a run starts outlives it: cancel, time-out, a normal end, a crash
of the worker, and the death of the caller (SIGKILL) all leave none behind,
even one started in a new session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from prefect import Flow, Parameter, task

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.domain import FlowRunState, FlowRunTimeoutError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")

# A child that starts its own session, and a grandchild whose parent exits at
# once (a daemon's double fork): neither is in the worker's process group, and
# the grandchild is an orphan.
_SPAWN = textwrap.dedent(
    """
    import os, subprocess, sys, time
    pid_file = sys.argv[1]
    grandchild = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    with open(pid_file, "a") as out:
        out.write(f"{os.getpid()} {grandchild.pid}\\n")
    time.sleep(120)
    """
)


_ORPHAN = textwrap.dedent(
    """
    import os, subprocess, sys
    code = "import os, sys, time; open(sys.argv[1], 'a').write(f'{os.getpid()} '); time.sleep(120)"
    subprocess.Popen([sys.executable, "-c", code, sys.argv[1]], start_new_session=True)
    """
)


def _start_family(pid_file: str) -> None:
    """A new-session child (which starts a grandchild) and an orphaned grandchild."""
    subprocess.Popen([sys.executable, "-c", _SPAWN, pid_file], start_new_session=True)
    # Double fork: the middle process exits at once, leaving an orphan.
    subprocess.Popen([sys.executable, "-c", _ORPHAN, pid_file]).wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_pids(pid_file)) < 3:
        time.sleep(0.02)


@task(name="start_family_and_hang")
def start_family_and_hang(pid_file: str) -> None:
    _start_family(pid_file)
    time.sleep(120)


@task(name="start_family_and_return")
def start_family_and_return(pid_file: str) -> str:
    _start_family(pid_file)
    return "done"


@task(name="start_family_and_crash")
def start_family_and_crash(pid_file: str) -> None:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # in the worker's group
    with open(pid_file, "a") as out:
        out.write(f"{os.getpid()}\n")
    time.sleep(0.2)
    os._exit(3)


with Flow("family-hangs") as hanging_family_flow:
    start_family_and_hang(Parameter("pid_file"))

with Flow("family-returns") as returning_family_flow:
    start_family_and_return(Parameter("pid_file"))


def _pids(pid_file: str) -> List[int]:
    try:
        return [int(word) for word in Path(pid_file).read_text().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _assert_all_gone(pids: List[int], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert [pid for pid in pids if _alive(pid)] == [], "processes the run started outlived it"


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "pids.txt"
    yield str(path)
    for pid in _pids(str(path)):  # never leave one behind, even when a test fails
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for_family(pid_file: str, count: int = 3) -> List[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_pids(pid_file)) < count:
        time.sleep(0.05)
    pids = _pids(pid_file)
    assert len(pids) >= count, f"the task started {pids}"
    assert all(_alive(pid) for pid in pids)
    return pids


class TestEveryWayARunEnds:
    def test_cancel_kills_processes_in_new_sessions_and_orphans(self, isolated: LocalBackend, pid_file: str) -> None:
        flow_run_id = isolated.submit({"pid_file": pid_file}, flow=hanging_family_flow)
        pids = _wait_for_family(pid_file)
        assert isolated.cancel(flow_run_id) is True
        _assert_all_gone(pids)

    def test_a_time_out_kills_them(self, isolated: LocalBackend, pid_file: str) -> None:
        with pytest.raises(FlowRunTimeoutError):
            isolated.run_and_return({"pid_file": pid_file}, flow=hanging_family_flow, timeout=5)
        _assert_all_gone(_pids(pid_file))
        assert len(_pids(pid_file)) == 3

    def test_what_a_finished_run_left_running_is_killed_before_its_result_is_back(
        self, isolated: LocalBackend, pid_file: str
    ) -> None:
        assert isolated.run_and_return({"pid_file": pid_file}, flow=returning_family_flow, task_name="start_family_and_return") == "done"
        pids = _pids(pid_file)
        assert len(pids) == 3
        assert [pid for pid in pids if _alive(pid)] == []
        # The worker goes on serving runs.
        assert isolated.run_and_return({"pid_file": pid_file + ".2"}, flow=returning_family_flow, task_name="start_family_and_return") == "done"

    def test_a_crashed_worker_leaves_nothing_in_its_process_group(self, isolated: LocalBackend, pid_file: str) -> None:
        with Flow("family-crashes") as flow:
            start_family_and_crash(Parameter("pid_file"))
        flow_run_id = isolated.submit({"pid_file": pid_file}, flow=flow)
        assert isolated.wait(flow_run_id, timeout=60) is FlowRunState.CRASHED
        (worker,) = _pids(pid_file)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_members(worker):
            time.sleep(0.05)
        assert _group_members(worker) == []


def _group_members(pgid: int) -> List[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and _alive(int(entry)):
                    members.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return members


_CALLER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from test_descendants import hanging_family_flow
    from lume_scheduling.adapters.local import LocalBackend

    if __name__ == "__main__":
        backend = LocalBackend(max_workers=1)
        backend.submit({"pid_file": sys.argv[1]}, flow=hanging_family_flow)
        time.sleep(300)
    """
)


class TestTheCallerDies:
    def test_a_caller_killed_with_sigkill_takes_the_runs_processes_with_it(self, tmp_path: Path, pid_file: str) -> None:
        script = tmp_path / "caller.py"
        script.write_text(_CALLER)
        caller = subprocess.Popen(
            [sys.executable, str(script), pid_file, str(Path(__file__).parent)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            pids = _wait_for_family(pid_file)
            caller.kill()  # no close(), no finalizer: only the workers' pipe tells them
            caller.wait(30)
            _assert_all_gone(pids, within=20)
        finally:
            if caller.poll() is None:
                caller.kill()
                caller.wait()
            assert caller.stderr is not None
            caller.stderr.close()
