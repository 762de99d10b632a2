"""The console script given bad input or hit by faults: each gets one clear
answer (issue "every bad input or fault gets a clear answer").

Each subprocess costs about a second of imports; each test checks everything it
can on one or two calls.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

FLOWS = "lume_scheduling.adapters.testing.flows"
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
