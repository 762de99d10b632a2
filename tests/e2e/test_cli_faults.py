"""The console script given bad input or hit by faults: each gets one clear
answer (issue "every bad input or fault gets a clear answer").

Each subprocess costs about a second of imports; each test checks everything it
can on one or two calls.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

FLOWS = "lume_scheduling.adapters.testing.flows"
USAGE = 2

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
