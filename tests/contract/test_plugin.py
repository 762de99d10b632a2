"""An embedder's view: with the plugin enabled and only a ``backend`` fixture,
a `BackendContractSuite` subclass runs, and the session says which capabilities
it checked. Run in a separate pytest process, as an embedder's project would."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

CONFTEST = 'pytest_plugins = ["lume_scheduling.adapters.testing.plugin"]\n'

EMBEDDER_TESTS = textwrap.dedent(
    """
    import pytest

    from lume_scheduling.adapters.in_memory import InMemoryBackend
    from lume_scheduling.adapters.testing import flows
    from lume_scheduling.adapters.testing.contract import BackendContractSuite


    class TestMyBackend(BackendContractSuite):
        @pytest.fixture
        def backend(self):
            with InMemoryBackend() as backend:
                yield backend


    @pytest.fixture
    def backend():
        with InMemoryBackend(server=False) as backend:
            yield backend


    def test_the_suites_asserts_are_rewritten():
        import lume_scheduling.adapters.testing.contract as contract

        assert "@py_builtins" in vars(contract)


    def test_the_plugin_offers_the_suites_fixtures(
        backend, target, project_name, hanging_flow, run_config_fields, submissions
    ):
        assert target(flows.arithmetic_flow) == {"flow": flows.arithmetic_flow}
        assert backend.run_and_return({"x": 2}, task_name="add", **target(flows.arithmetic_flow)) == 4
        assert [request.parameters for request in submissions] == [{"x": 2}]
        assert project_name == "lume-scheduling-contract"
        assert hanging_flow is flows.hanging_flow
        assert run_config_fields == {}
    """
)

# The fake cannot run the real 60 s hanging flow unscripted; everything else runs.
SELECTION = (
    "declares or one_task_named or unknown_flow_run_id or invalid_run_config or plugin or rewritten"
)


def test_an_embedder_runs_the_suite_with_only_a_backend_fixture(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (tmp_path / "test_my_backend.py").write_text(EMBEDDER_TESTS, encoding="utf-8")
    junit = tmp_path / "junit.xml"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            "-k",
            SELECTION,
            f"--junitxml={junit}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "lume-scheduling backend contract" in output
    assert (
        "TestMyBackend (InMemoryBackend): checked with cancel, server, timeout; "
        "checked without isolation" in output
    )
    cases = ElementTree.parse(junit).getroot().iter("testcase")
    recorded = {
        case.get("name"): {prop.get("name"): prop.get("value") for prop in case.iter("property")}
        for case in cases
    }
    assert {"test_declares_its_capabilities", "test_one_task_named_returns_its_value"} <= set(
        recorded
    )
    assert "test_the_plugin_offers_the_suites_fixtures" in recorded
    assert "test_the_suites_asserts_are_rewritten" in recorded
    assert len(recorded) >= 15
    suite_cases = {
        name: props
        for name, props in recorded.items()
        if "plugin" not in name and "rewritten" not in name
    }
    assert all(
        props.get("backend_capabilities") == "cancel,server,timeout"
        for props in suite_cases.values()
    ), recorded
