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
