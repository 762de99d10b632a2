"""The installed ``lume-scheduling`` console script, end to end, in subprocesses.

Each subprocess costs about a second of imports, so every test makes one or two
calls and checks everything it can on them: exit code, stdout (JSON only),
stderr (one error line, no traceback unless --debug), and (in conftest) that
nothing was written under HOME.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

FLOWS = "lume_scheduling.adapters.testing.flows"
SCRIPT = Path(sys.executable).parent / "lume-scheduling"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "e2e-secret-api-key-0123456789"

USAGE, FLOW_FAILED, TIMEOUT, UNAVAILABLE = 2, 3, 4, 5

Write = Callable[[str, str], Path]

FLOW_FILE = '''
"""A flow defined in a file that is not importable by name."""
from datetime import timedelta

from prefect import Flow, Parameter, task


@task(name="greet")
def greet(name):
    return f"hello {name}"


@task(name="odd")
def odd(name):
    # Not JSON: printed as its repr.
    return timedelta(seconds=len(name))


with Flow("greeting") as flow:
    name = Parameter("name", default="world")
    greet(name)
    odd(name)
'''


DIVIDING_FLOW = '''
"""A flow whose task fails when x is 0."""
from prefect import Flow, Parameter, task


@task(name="divide")
def divide(x):
    return 1 / x


with Flow("dividing") as flow:
    divide(Parameter("x"))
'''


PARENT_FLOW = '''
import os

from prefect import Flow, task


@task(name="parent")
def parent():
    return os.getppid()


with Flow("parent") as flow:
    parent()
'''


def hostile_yaml(marker: Path) -> str:
    return f'!!python/object/apply:os.system ["touch {marker}"]'


def single_error(completed: Any) -> str:
    """The one error line; stdout empty; no traceback."""
    assert completed.out == "", completed.out
    assert len(completed.error_lines) == 1, completed.err
    assert "Traceback" not in completed.err
    return str(completed.error_lines[0])


class TestRunOnTheLocalBackend:
    def test_a_flow_runs_and_its_result_is_json_on_stdout(self, lume: Any) -> None:
        done = lume("run", f"{FLOWS}:arithmetic_flow", "-p", "x=5", "-p", "y=2")
        assert done.code == 0, done.err
        assert json.loads(done.out) == {"add-1": 7, "add_more-1": 17, "multiply-1": 10, "x": 5, "y": 2}
        assert "submitted to the local backend" in done.err
        assert ": success" in done.err

    def test_a_settings_file_and_task_selection(self, lume: Any) -> None:
        done = lume(
            "--config", str(EXAMPLES / "configs" / "local.toml"), "--quiet",
            "run", f"{FLOWS}:arithmetic_flow", "-p", "x=1.5", "--task", "add",
        )
        assert (done.code, json.loads(done.out)) == (0, 3.5), done.err
        assert "lume-scheduling:" not in done.err

    def test_a_flow_file_runs_in_a_worker_and_odd_values_print_as_repr(self, lume: Any, write: Write) -> None:
        flow_file = write("greeting.py", FLOW_FILE)
        done = lume("run", str(flow_file), "-p", "name=lume")
        assert done.code == 0, done.err
        assert json.loads(done.out) == {
            "greet-1": "hello lume",
            "odd-1": "datetime.timedelta(seconds=4)",
            "name": "lume",
        }

    def test_its_one_run_goes_to_a_worker_forked_from_the_command_itself(
        self, cli_env: Dict[str, str], write: Write
    ) -> None:
        path = write("parent_flow.py", PARENT_FLOW)
        process = subprocess.Popen(
            [str(SCRIPT), "--quiet", "run", str(path), "--task", "parent"],
            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err
        # Not the fork server's child: no second import of prefect to wait for.
        assert json.loads(out) == process.pid

    def test_the_readme_example_runs_with_its_logs_on_stderr(self, lume: Any) -> None:
        done = lume("run", "examples/hello_flow.py", "-p", "name=LUME", "-p", "n=4")
        assert done.code == 0, done.err
        assert done.out == (
            '{"greeting-1": "Hello, LUME!", "n": 4, "name": "LUME", '
            '"squares-1": [1, 4, 9, 16], "sum_of_squares-1": 30}\n'
        )
        assert "lume-scheduling: Beginning Flow run for 'hello'" in done.err


class TestFlowRunErrors:
    def test_a_failed_flow_exits_3_with_its_cause(self, lume: Any) -> None:
        done = lume("run", f"{FLOWS}:failing_flow", "-p", "message=boom")
        assert done.code == FLOW_FAILED
        assert done.out == ""
        (line,) = done.error_lines
        assert "flow 'failing' run failed" in line and "ValueError" in line and "boom" in line

    def test_a_failed_tasks_traceback_names_the_flow_file_and_line(self, lume: Any, write: Write) -> None:
        path = write("dividing_flow.py", DIVIDING_FLOW)
        done = lume("run", str(path), "-p", "x=0")
        assert done.code == FLOW_FAILED, done.err
        # The task ran in a worker process, its code sent by value; the traceback
        # Prefect logs there still points at the user's file.
        assert f'File "{path.resolve()}", line 8, in divide' in done.err, done.err
        assert "return 1 / x" in done.err
        assert "<dynamic-code>" not in done.err

    def test_a_hanging_flow_times_out_exits_4_and_is_cancelled(self, lume: Any) -> None:
        started = time.monotonic()
        done = lume("run", f"{FLOWS}:hanging_flow", "--timeout", "1")
        elapsed = time.monotonic() - started
        assert done.code == TIMEOUT, done.err
        assert done.out == ""
        assert "Traceback" not in done.err  # not even from a worker stopped while it starts
        (line,) = done.error_lines
        assert "did not finish within 1 s" in line and "cancelled" in line
        # The flow would sleep 60 s; a worker left running would hold stderr open.
        assert elapsed < 20

    def test_ctrl_c_stops_the_run_and_exits_130(self, cli_env: Dict[str, str]) -> None:
        process = subprocess.Popen(
            [str(SCRIPT), "run", f"{FLOWS}:hanging_flow"],
            env=cli_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert process.stderr is not None
            seen = []
            for line in process.stderr:  # wait until the flow runs
                seen.append(line)
                if line.rstrip().endswith(": running"):
                    break
            started = time.monotonic()
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 130, "".join(seen) + err
        assert out == ""
        assert err.rstrip().endswith("lume-scheduling: aborted")
        # A worker left running would hold stderr open until its 60 s sleep ends.
        assert time.monotonic() - started < 15

    def test_a_parameter_of_the_wrong_type_fails_the_flow(self, lume: Any) -> None:
        done = lume("run", f"{FLOWS}:arithmetic_flow", "-p", "x=oops")
        assert done.code == FLOW_FAILED
        (line,) = done.error_lines
        assert "TypeError" in line

    def test_a_malformed_parameter_is_a_usage_error(self, lume: Any) -> None:
        done = lume("run", f"{FLOWS}:arithmetic_flow", "-p", "x")
        assert done.code == USAGE
        assert single_error(done) == (
            "lume-scheduling: error: parameter 'x' must be written name=value (option -p/--param)"
        )

    def test_an_unknown_task_is_a_usage_error_listing_the_tasks(self, lume: Any) -> None:
        done = lume("run", f"{FLOWS}:arithmetic_flow", "--task", "subtract")
        assert done.code == USAGE
        line = single_error(done)
        assert "no task named 'subtract'" in line and "add_more" in line


class TestUnreachableBackend:
    def test_a_docker_backend_at_a_closed_port_exits_5_without_showing_the_key(
        self, lume: Any, closed_port: int
    ) -> None:
        env = {
            "LUME_SCHEDULING_SERVER__API_URL": f"http://127.0.0.1:{closed_port}/graphql",
            "LUME_SCHEDULING_SERVER__API_KEY": SECRET,
            "LUME_SCHEDULING_SERVER__REQUEST_RETRIES": "0",
        }
        done = lume("--backend", "docker", "run", "--flow-id", "some-flow", env=env, timeout=120)
        assert done.code == UNAVAILABLE, done.err
        assert str(closed_port) in single_error(done)
        assert SECRET not in done.err + done.out

    def test_status_on_kubernetes_at_a_closed_port_exits_5(self, lume: Any, write: Write, closed_port: int) -> None:
        settings = write(
            "k8s.yaml",
            f"backend: kubernetes\nserver:\n  api_url: http://127.0.0.1:{closed_port}/graphql\n  request_retries: 0\n",
        )
        done = lume("--config", str(settings), "status", "some-run", timeout=120)
        assert done.code == UNAVAILABLE, done.err
        single_error(done)


class TestUsageErrors:
    def test_an_unknown_option_is_one_line_and_exit_2(self, lume: Any) -> None:
        done = lume("run", "--colour", "red")
        assert done.code == USAGE
        assert "No such option '--colour'" in single_error(done)

    def test_run_without_flow_is_a_usage_error(self, lume: Any) -> None:
        done = lume("run")
        assert done.code == USAGE
        assert "missing FLOW" in single_error(done)

    def test_status_needs_a_server_backend(self, lume: Any) -> None:
        done = lume("status", "some-run")
        assert done.code == USAGE
        assert single_error(done) == (
            "lume-scheduling: error: status needs a server backend (--backend docker or kubernetes): "
            "runs of the local backend live in the process that started them; use 'lume-scheduling run' instead"
        )

    def test_create_project_needs_a_server_backend(self, lume: Any) -> None:
        done = lume("create-project", "lume")
        assert done.code == USAGE
        assert "create-project needs a server backend" in single_error(done)

    def test_a_flow_that_cannot_be_loaded_shows_its_traceback_only_with_debug(self, lume: Any, write: Write) -> None:
        broken = write("broken.py", "import no_such_module_for_lume\n")
        done = lume("run", str(broken))
        assert done.code == USAGE
        assert "ModuleNotFoundError" in single_error(done)
        debug = lume("--debug", "run", str(broken))
        assert debug.code == USAGE
        assert "Traceback (most recent call last)" in debug.err
        assert len(debug.error_lines) == 1


class TestConfigFiles:
    def test_wrong_types_in_a_settings_file_name_each_key_and_the_file(self, lume: Any, write: Write) -> None:
        settings = write("bad.toml", '[local]\nmax_workers = "many"\nisolated = "sometimes"\n')
        done = lume("--config", str(settings), "run", f"{FLOWS}:arithmetic_flow")
        assert done.code == USAGE
        assert done.out == ""
        assert len(done.error_lines) == 2
        assert all(str(settings) in line for line in done.error_lines)
        assert "local.max_workers: value is not a valid integer" in done.error_lines[0]
        assert "local.isolated: value is not a valid boolean" in done.error_lines[1]

    def test_an_unknown_key_is_named(self, lume: Any, write: Write) -> None:
        settings = write("bad.yaml", f"backend: docker\nserver:\n  api_key: {SECRET}\n  api_ulr: http://x/graphql\n")
        done = lume("--config", str(settings), "status", "r")
        assert done.code == USAGE
        assert single_error(done).endswith("server.api_ulr: unknown key")
        assert SECRET not in done.err

    def test_a_bad_environment_value_names_the_variable(self, lume: Any) -> None:
        done = lume("run", f"{FLOWS}:arithmetic_flow", env={"LUME_SCHEDULING_LOCAL__MAX_WORKERS": "0"})
        assert done.code == USAGE
        assert "local.max_workers (LUME_SCHEDULING_LOCAL__MAX_WORKERS)" in single_error(done)

    def test_a_hostile_settings_file_is_rejected_and_runs_nothing(self, lume: Any, write: Write) -> None:
        marker = Path("/tmp") / f"pwned-{uuid.uuid4()}"
        settings = write("evil.yaml", f"backend: {hostile_yaml(marker)}\n")
        done = lume("--config", str(settings), "run", f"{FLOWS}:arithmetic_flow")
        assert done.code == USAGE
        assert "could not determine a constructor" in single_error(done)
        assert not marker.exists()

    def test_a_hostile_run_config_is_rejected_and_runs_nothing(self, lume: Any, write: Write) -> None:
        marker = Path("/tmp") / f"pwned-{uuid.uuid4()}"
        run_config = write("evil-run.yaml", f"kind: local\nlabels:\n  - {hostile_yaml(marker)}\n")
        done = lume("validate-config", str(run_config))
        assert done.code == USAGE
        assert "could not determine a constructor" in single_error(done)
        assert not marker.exists()


class TestValidateConfig:
    def test_a_valid_run_config_prints_its_validated_form_with_env_masked(self, lume: Any, write: Write) -> None:
        run_config = write(
            "run.yaml",
            f"kind: kubernetes\nimage: lume/flows:1\nmemory_limit: 1.5Gi\nenv:\n  TOKEN: {SECRET}\n  THREADS: 4\n",
        )
        done = lume("validate-config", str(run_config))
        assert done.code == 0, done.err
        validated = json.loads(done.out)
        assert validated["kind"] == "kubernetes"
        assert validated["memory_limit"] == "1.5Gi"
        assert validated["cpu_limit"] == 1.0
        assert validated["env"] == {"TOKEN": "**********", "THREADS": "**********"}
        assert SECRET not in done.out + done.err

    def test_an_invalid_run_config_prints_one_line_per_field(self, lume: Any, write: Write) -> None:
        run_config = write(
            "run.json",
            json.dumps({"kind": "docker", "image": "Bad Image", "ports": [0], "labels": "gpu", "colour": 1}),
        )
        done = lume("validate-config", str(run_config))
        assert done.code == USAGE
        assert done.out == ""
        fields = [line.split(": ")[3] for line in done.error_lines]
        assert sorted(fields) == ["colour", "image", "labels", "ports"]
        assert all(f"run config {str(run_config)!r}" in line for line in done.error_lines)
