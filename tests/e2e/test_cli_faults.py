"""The console script given bad input or hit by faults: each gets one clear
answer (issue "every bad input or fault gets a clear answer").

Each subprocess costs about a second of imports; each test checks everything it
can on one or two calls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

FLOWS = "lume_scheduling.adapters.testing.flows"
SCRIPT = Path(sys.executable).parent / "lume-scheduling"
REPO = Path(__file__).resolve().parents[2]
USAGE, FLOW_FAILED = 2, 3

Write = Callable[[str, str], Path]


def single_error(completed: Any) -> str:
    """The one error line; stdout empty; no traceback."""
    assert completed.out == "", completed.out
    assert len(completed.error_lines) == 1, completed.err
    assert "Traceback" not in completed.err
    return str(completed.error_lines[0])


class TestParameters:
    def test_an_unknown_parameter_is_a_usage_error_listing_the_flows_parameters(self, lume: Any) -> None:
        done = lume("run", f"{FLOWS}:arithmetic_flow", "-p", "nosuch=1")
        assert done.code == USAGE, done.err
        assert single_error(done) == (
            "lume-scheduling: error: flow 'arithmetic' has no parameter 'nosuch'; "
            "its parameters are: x (default 1), y (default 2)"
        )
        # Refused before a run was created: no run was submitted.
        assert "submitted" not in done.err

    def test_a_missing_required_parameter_is_a_usage_error(self, lume: Any) -> None:
        done = lume("--backend", "fake", "run", f"{FLOWS}:required_flow", "--project", "p", "-p", "scale=2")
        assert done.code == USAGE, done.err
        assert single_error(done).endswith("needs parameter 'x'; its parameters are: scale (default 1), x (required)")
        done = lume("--backend", "fake", "--quiet", "run", f"{FLOWS}:required_flow", "--project", "p", "-p", "x=2")
        assert done.code == 0, done.err
        assert json.loads(done.out.splitlines()[-1]) == {"double-1": 4, "multiply-1": 4, "scale": 1, "x": 2}


SECRET = "e2e-token-0123456789"
BACKENDS = {
    "local": {},
    "local-in-process": {"LUME_SCHEDULING_LOCAL__ISOLATED": "false"},
    "fake": {"LUME_SCHEDULING_BACKEND": "fake", "LUME_SCHEDULING_FAKE__SERVER": "false"},
}


class TestSecrets:
    @pytest.mark.parametrize("backend", sorted(BACKENDS))
    def test_an_env_value_in_a_task_exception_is_masked_everywhere(self, lume: Any, write: Write, backend: str) -> None:
        run_config = write("run.yaml", f"kind: local\nenv:\n  TOKEN: {SECRET}\n")
        done = lume(
            "run", f"{FLOWS}:failing_flow", "-p", f"message=refused {SECRET}", "--run-config", str(run_config),
            env=BACKENDS[backend],
        )
        assert done.code == FLOW_FAILED, done.err
        assert SECRET not in done.out + done.err
        (line,) = done.error_lines
        assert "ValueError: task 'explode-1': refused **********" in line
        # The flow's own log lines (its traceback included) were shown, masked.
        assert "Exception encountered during task execution" in done.err


def alias_bomb() -> str:
    """600 bytes of YAML that expand to 10 ** 9 nodes."""
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


class TestHostileFiles:
    def test_an_alias_bomb_in_a_run_config_or_settings_file_is_refused(self, lume: Any, write: Write) -> None:
        run_config = write("bomb.yaml", "kind: local\n" + alias_bomb())
        done = lume("validate-config", str(run_config))
        assert done.code == USAGE
        line = single_error(done)
        assert line.startswith(f"lume-scheduling: error: run config {str(run_config)!r}: ")
        assert "nodes once its aliases are expanded" in line
        settings = write("bomb-settings.yaml", "backend: local\nx:\n" + "".join(f"  {l}\n" for l in alias_bomb().splitlines()))
        done = lume("--config", str(settings), "run", f"{FLOWS}:arithmetic_flow")
        assert done.code == USAGE
        assert f"settings file {str(settings)!r}: " in single_error(done)

    def test_deep_nesting_is_exit_2_and_one_line_naming_the_file(self, lume: Any, write: Write) -> None:
        settings = write("deep.yaml", "backend: " + "[" * 100_000 + "]" * 100_000 + "\n")
        done = lume("--config", str(settings), "run", f"{FLOWS}:arithmetic_flow")
        assert done.code == USAGE
        assert single_error(done).startswith(
            f"lume-scheduling: error: settings file {str(settings)!r}: is nested more than 100 levels deep"
        )
        run_config = write("deep.json", '{"kind": "local", "env": ' + "[" * 100_000 + "]" * 100_000 + "}")
        done = lume("validate-config", str(run_config))
        assert done.code == USAGE
        assert "is nested more than 100 levels deep" in single_error(done)


NOISY_FLOW = '''
import logging
import os
import sys

from prefect import Flow, Parameter, task


@task(name="noisy")
def noisy(x):
    print("printed by the task")
    sys.stdout.flush()
    os.write(1, b"written to fd 1 by the task\\n")
    print("printed to stderr by the task", file=sys.stderr)
    logging.getLogger("user.model").warning("logged by the task")
    return x


with Flow("noisy") as flow:
    noisy(Parameter("x", default=1))
'''


class TestStdoutHoldsOnlyTheResult:
    @pytest.mark.parametrize("backend", sorted(BACKENDS))
    def test_what_a_flow_prints_or_logs_goes_to_stderr(self, lume: Any, write: Write, backend: str) -> None:
        flow_file = write("noisy.py", NOISY_FLOW)
        done = lume("run", str(flow_file), "-p", "x=7", env=BACKENDS[backend])
        assert done.code == 0, done.err
        assert done.out == '{"noisy-1": 7, "x": 7}\n'
        for line in ("printed by the task", "written to fd 1 by the task", "printed to stderr by the task"):
            assert line in done.err
        assert "logged by the task" in done.err
        assert "Beginning Flow run for 'noisy'" in done.err  # prefect's own INFO lines

    @pytest.mark.parametrize("backend", sorted(BACKENDS))
    def test_quiet_silences_the_flows_logs_and_keeps_the_one_line_error(self, lume: Any, backend: str) -> None:
        if backend == "local":
            loud = lume("run", f"{FLOWS}:failing_flow", env=BACKENDS[backend])
            assert loud.code == FLOW_FAILED
            assert "Traceback" in loud.err  # the task's traceback, among the flow's log lines
        done = lume("--quiet", "run", f"{FLOWS}:failing_flow", env=BACKENDS[backend])
        assert done.code == FLOW_FAILED
        assert done.out == ""
        (line,) = done.err.splitlines()
        assert line.startswith("lume-scheduling: error: flow 'failing' run failed: ValueError")


class TestOptionsAndFiles:
    def test_a_time_out_the_library_refuses_is_a_usage_error(self, lume: Any) -> None:
        done = lume("run", f"{FLOWS}:hanging_flow", "--timeout", "nan")
        assert done.code == USAGE
        assert single_error(done) == (
            "lume-scheduling: error: Invalid value for '--timeout': the time-out must be a finite number "
            "of seconds, not nan (see 'lume-scheduling run --help')"
        )

    def test_a_flow_file_that_exits_while_imported_is_a_usage_error_naming_it(self, lume: Any, write: Write) -> None:
        flow_file = write("exits.py", "import sys\nsys.exit(0)\n")
        done = lume("run", str(flow_file))
        assert done.code == USAGE
        line = single_error(done)
        assert f"cannot load flow {str(flow_file)!r}" in line and "sys.exit(0)" in line

    def test_a_variable_with_two_separators_is_named(self, lume: Any) -> None:
        done = lume(
            "run", f"{FLOWS}:arithmetic_flow",
            env={"LUME_SCHEDULING_LOCAL__MAX_WORKERS__X": "1", "LUME_SCHEDULING_LOCAL__MAX_WORKERS": "2"},
        )
        assert done.code == USAGE
        assert "(LUME_SCHEDULING_LOCAL__MAX_WORKERS__X): not a setting" in single_error(done)

    @pytest.mark.parametrize(
        "kind, fields, backend, wanted",
        [("docker", "image: lume/flows:1\n", "local", "local"), ("local", "labels: [a]\n", "docker", "docker")],
    )
    def test_a_run_config_of_the_wrong_kind_names_the_file_and_both_kinds(
        self, lume: Any, write: Write, kind: str, fields: str, backend: str, wanted: str
    ) -> None:
        run_config = write("run.yaml", f"kind: {kind}\n{fields}")
        args = ["run", "--backend", backend, "--run-config", str(run_config)]
        args += [f"{FLOWS}:arithmetic_flow"] if backend == "local" else ["--flow-id", "some-flow"]
        done = lume(*args, env={"LUME_SCHEDULING_SERVER__REQUEST_RETRIES": "0"})
        assert done.code == USAGE, done.err
        assert single_error(done) == (
            f"lume-scheduling: error: run config {str(run_config)!r}: kind: is {kind!r}, "
            f"but the {backend} backend runs {wanted!r} run configs"
        )


FAMILY_FLOW = '''
import os
import subprocess
import sys
import time

from prefect import Flow, Parameter, task


@task(name="start_child_and_hang")
def start_child_and_hang(pid_file):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    with open(pid_file, "w") as out:
        out.write(str(child.pid))
    time.sleep(120)


with Flow("family") as flow:
    start_child_and_hang(Parameter("pid_file"))
'''


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _start(cli_env: Dict[str, str], *args: str) -> "subprocess.Popen[str]":
    """The console script in a session of its own: signals to its process group reach
    it, its fork server and its resource tracker (as Ctrl-C in a terminal does)."""
    return subprocess.Popen(
        [str(SCRIPT), *args], env=cli_env, cwd=REPO, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _read_until(process: "subprocess.Popen[str]", ending: str, seen: List[str]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        seen.append(line)
        if line.rstrip().endswith(ending):
            return
    raise AssertionError("the command ended before it printed " + repr(ending) + ":\n" + "".join(seen))


def _finish(process: "subprocess.Popen[str]", seen: List[str]) -> Tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, out, "".join(seen) + err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
class TestSignals:
    def test_sigterm_closes_the_backend_like_ctrl_c_and_no_process_of_the_run_is_left(
        self, cli_env: Dict[str, str], write: Write, tmp_path: Path
    ) -> None:
        flow_file = write("family.py", FAMILY_FLOW)
        pid_file = tmp_path / "child.pid"
        process = _start(cli_env, "run", str(flow_file), "-p", f"pid_file={pid_file}")
        seen: List[str] = []
        try:
            _read_until(process, ": running", seen)
            deadline = time.monotonic() + 60
            while not pid_file.exists() or not pid_file.read_text():
                assert time.monotonic() < deadline, "".join(seen)
                time.sleep(0.05)
            child = int(pid_file.read_text())
            process.send_signal(signal.SIGTERM)
            code, out, err = _finish(process, seen)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        assert code == 143, err
        assert out == ""
        assert "Traceback" not in err
        assert err.rstrip().splitlines()[-1] == "lume-scheduling: terminated"
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the task's child (in a session of its own) outlived the command"

    # After the "submitted" line the fork server and the first worker are starting:
    # Ctrl-C to the whole process group then used to print a fork server's traceback.
    @pytest.mark.parametrize("delay", [0.0, 0.1, 0.3, 0.7, 1.2])
    def test_ctrl_c_to_the_process_group_while_workers_start_is_exit_130_and_one_line(
        self, cli_env: Dict[str, str], delay: float
    ) -> None:
        process = _start(cli_env, "run", f"{FLOWS}:hanging_flow")
        seen: List[str] = []
        _read_until(process, "submitted to the local backend", seen)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGINT)
        code, out, err = _finish(process, seen)
        assert code == 130, err
        assert out == ""
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
        assert [line for line in err.splitlines() if "aborted" in line] == ["lume-scheduling: aborted"]
        assert err.rstrip().endswith("lume-scheduling: aborted")

    @pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "aborted"), (signal.SIGTERM, 143, "terminated")])
    def test_a_signal_while_the_command_line_is_being_imported(
        self, cli_env: Dict[str, str], signum: int, code: int, word: str
    ) -> None:
        # The console script's entry point, with the signal sent by the process
        # itself at the moment it imports click (deterministic, unlike a delay).
        script = (
            "import importlib.abc, os, sys\n"
            "class Hook(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'click':\n"
            f"            os.kill(os.getpid(), {int(signum)})\n"
            "        return None\n"
            "sys.meta_path.insert(0, Hook())\n"
            "sys.argv = ['lume-scheduling', '--help']\n"
            "from lume_scheduling.adapters.console import main\n"
            "main()\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], env=cli_env, cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stdout, done.stderr) == (code, "", f"lume-scheduling: {word}\n")
