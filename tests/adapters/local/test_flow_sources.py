"""Which flows reach a worker process: from a module, from ``__main__``, from a
closure; what cannot be sent says so; each flow is pickled once."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import threading
import importlib.util
import uuid

import pytest
from prefect import Flow, Parameter, task

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowFailedError


POINT_MODULE = """
from dataclasses import dataclass
from prefect import Flow, Parameter, task


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@task(name="mirror")
def mirror(point):
    return Point(point.y, point.x)


with Flow("mirror") as flow:
    mirror(Parameter("point"))
"""


def _load_by_path(path):
    """Import a file under a unique name, not on sys.path (as the CLI loads flows)."""
    spec = importlib.util.spec_from_file_location(f"lume_test_points_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class TestFlowSources:
    def test_a_flow_from_an_importable_module(self, isolated: LocalBackend) -> None:
        assert isolated.run_and_return({"x": 3}, None, "double", flow=flows.twin_flow) == {
            "double-1": 6,
            "double-2": 12,
        }

    def test_a_flow_defined_in_this_test_module_is_sent_by_value(self, isolated: LocalBackend, local_flows) -> None:
        # conftest is loaded by path: a worker cannot import it by name.
        assert isolated.run_and_return({"seconds": 0, "value": 42}, None, "sleep_then_echo", flow=local_flows.sleepy) == 42

    def test_flows_and_values_from_a_module_workers_cannot_import(self, isolated: LocalBackend, tmp_path) -> None:
        path = tmp_path / "points.py"
        path.write_text(POINT_MODULE)
        points = _load_by_path(path)
        try:
            result = isolated.run_and_return({"point": points.Point(1, 2)}, None, "mirror", flow=points.flow)
            assert result == points.Point(2, 1) and type(result) is points.Point
        finally:
            del sys.modules[points.__name__]

    def test_a_flow_built_in_a_closure(self, isolated: LocalBackend) -> None:
        offset = 100

        @task(name="shift")
        def shift(x: int) -> int:
            return x + offset

        with Flow("closure") as closure_flow:
            shift(Parameter("x"))
        assert isolated.run_and_return({"x": 1}, None, "shift", flow=closure_flow) == 101

    def test_a_flow_defined_in_main(self, tmp_path) -> None:
        script = tmp_path / "main_flow.py"
        script.write_text(textwrap.dedent(
            """
            from prefect import Flow, Parameter, task
            from lume_scheduling.adapters.local import LocalBackend

            @task(name="cube")
            def cube(x):
                return x ** 3

            with Flow("main-flow") as flow:
                cube(Parameter("x"))

            if __name__ == "__main__":
                with LocalBackend(max_workers=1) as backend:
                    print("cube =", backend.run_and_return({"x": 4}, None, "cube", flow=flow))
            """
        ))
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert "cube = 64" in done.stdout


class TestUnsendableFlows:
    def test_a_task_closing_over_a_lock_is_refused_with_a_pointer_to_isolated_false(
        self, isolated: LocalBackend
    ) -> None:
        lock = threading.Lock()

        @task(name="guarded")
        def guarded(x: int) -> int:
            with lock:
                return x

        with Flow("locked") as locked_flow:
            guarded(Parameter("x"))
        with pytest.raises(TypeError) as caught:
            isolated.run({"x": 1}, flow=locked_flow)
        message = str(caught.value)
        assert "flow 'locked' cannot be sent to a worker process" in message
        assert "isolated=False" in message and "lock" in message
        assert not isinstance(caught.value, pickle.PicklingError)
        assert isolated._stats()["workers_started"] == 0
        with LocalBackend(isolated=False) as in_process:
            assert in_process.run_and_return({"x": 7}, None, "guarded", flow=locked_flow) == 7

    def test_an_unpicklable_parameter_is_refused(self, isolated: LocalBackend) -> None:
        with pytest.raises(TypeError, match="parameters cannot be sent to a worker process"):
            isolated.run({"x": threading.Lock()}, flow=flows.arithmetic_flow)

    def test_a_task_value_that_cannot_come_back_fails_the_run_by_name(
        self, isolated: LocalBackend, local_flows
    ) -> None:
        with pytest.raises(FlowFailedError) as caught:
            isolated.run_and_return({}, flow=local_flows.unpicklable_result)
        assert "'unpicklable_value-1'" in str(caught.value) and "cannot be sent back" in str(caught.value)
        assert isolated.run_and_return({"x": 1}, None, "add", flow=flows.arithmetic_flow) == 3
