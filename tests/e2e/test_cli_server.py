"""The console script against an emulated Prefect 1 Server: the commands that
address flows and flow runs by id work across processes (each command is its
own process, as a user's shell would run them).

The emulated Prefect Server lives with the server backend's tests, in the
package ``tests/server/emulator/`` (loaded by path); the flow runs are executed
by prefect's own LocalAgent and ``prefect execute flow-run``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
EMULATOR = REPO / "tests" / "server" / "emulator" / "__init__.py"
FLOWS = "lume_scheduling.adapters.testing.flows"
IMAGE = "ghcr.io/slac-ml/lume-services:1.0"

pytestmark = pytest.mark.skipif(not EMULATOR.exists(), reason="the emulated Prefect Server has not landed")


def _emulator_module() -> Any:
    name = "lume_scheduling_tests_emulator"  # as tests/server/conftest.py loads it
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EMULATOR, submodule_search_locations=[str(EMULATOR.parent)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its submodules look it up here
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An emulated server and a LocalAgent for this module's tests (one agent start)."""
    running = _emulator_module().Emulated(tmp_path_factory.mktemp("emulator"))
    yield running
    running.close()


@pytest.fixture
def server(write: Any, emulated: Any) -> Iterator[Path]:
    """The emulated server, fresh; yields a settings file for the docker backend."""
    http = emulated.server
    try:
        yield write(
            "server.yaml",
            "backend: docker\n"
            "server:\n"
            f"  api_url: {http.url}\n"
            f"  default_image: {IMAGE}\n"
            "  poll_interval: 0.05\n"
            "  poll_max_interval: 0.2\n"
            "  agent_check_after: null\n"
            "  cancel_timeout: 10\n",
        )
    finally:
        emulated.reset()


@pytest.mark.real_agent
class TestServerCommands:
    def test_register_submit_status_and_result_across_processes(self, lume: Any, server: Path) -> None:
        config = ["--config", str(server)]
        assert lume(*config, "create-project", "lume").code == 0
        registered = lume(*config, "register", f"{FLOWS}:arithmetic_flow", "--project", "lume")
        assert registered.code == 0, registered.err
        flow_id = registered.out.strip()
        submitted = lume(*config, "submit", "--flow-id", flow_id, "-p", "x=5", "-p", "y=2")
        assert submitted.code == 0, submitted.err
        flow_run_id = submitted.out.strip()
        result = lume(*config, "result", flow_run_id, "--task", "add_more", "--timeout", "60")
        assert result.code == 0, result.err
        assert json.loads(result.out) == 17
        status = lume(*config, "status", flow_run_id)
        assert (status.code, status.out) == (0, "success\n")

    def test_run_registers_into_a_project_and_a_time_out_cancels_on_the_server(self, lume: Any, server: Path) -> None:
        done = lume("--config", str(server), "run", f"{FLOWS}:hanging_flow", "--project", "lume", "--timeout", "2")
        assert done.code == 4, done.err
        (line,) = done.error_lines
        assert "did not finish within 2 s; it was cancelled" in line
        assert "registered flow 'hanging' in project 'lume'" in done.err
        # The run's own log lines, read from the server, are shown as they come: here the
        # agent's (prefect's runner ships its lines when its process ends, after the
        # final state; tests/server/test_server_backend.py has that case, issue 10).
        assert "] Submitted for execution: PID: " in done.err

    def test_unknown_run_ids_are_not_found(self, lume: Any, server: Path) -> None:
        done = lume("--config", str(server), "cancel", "00000000-0000-0000-0000-000000000000")
        assert done.code == 6, done.err
        assert "no flow run" in done.error_lines[0]


@pytest.fixture
def bare(tmp_path: Path, write: Any) -> Iterator[Any]:
    """A server of its own without agents (no run is executed), with a settings file
    for the docker backend as ``bare.settings``."""
    running = _emulator_module().Emulated(tmp_path / "bare", agent=False)
    running.settings = write(
        "bare.yaml",
        f"backend: docker\nserver:\n  api_url: {running.url}\n  default_image: {IMAGE}\n  request_retries: 0\n",
    )
    yield running
    running.close()


class TestServerAnswers:
    """What the server answers, mapped to exit codes (issue 10, item 5)."""

    def test_a_malformed_answer_is_an_unavailable_backend(self, lume: Any, bare: Any) -> None:
        config = ["--config", str(bare.settings)]
        # A real HTTP answer of the server, broken after the server ran the query.
        bare.server.faults.rewrite_next(lambda answer: {"data": {"flow_run_by_pk": "garbage"}}, operation="flow_run_by_pk")
        done = lume(*config, "status", "3f2c8a8e-0000-4000-8000-000000000000")
        assert done.code == 5, done.err
        assert done.error_lines == [
            f"lume-scheduling: error: scheduling backend at {bare.url} is unavailable: get_state: the server's "
            "answer is malformed: data.flow_run_by_pk: expected an object or null, got a string"
        ]
        assert "Traceback" not in done.err
        assert bare.server.faults.pending() == 0

    def test_errors_that_are_no_list_are_an_unavailable_backend(self, lume: Any, bare: Any) -> None:
        bare.server.faults.rewrite_next(lambda answer: {"errors": "boom"}, operation="create_project")
        done = lume("--config", str(bare.settings), "create-project", "lume")
        assert done.code == 5, done.err
        assert done.error_lines[0].endswith(
            "create_project: the server's answer is malformed: errors: expected a non-empty list of errors, got a string"
        )

    def test_an_archived_flow_version_is_not_found_and_names_the_newest(self, lume: Any, bare: Any) -> None:
        config = ["--config", str(bare.settings)]
        assert lume(*config, "create-project", "lume").code == 0
        old = lume(*config, "register", f"{FLOWS}:arithmetic_flow", "--project", "lume").out.strip()
        new = lume(*config, "register", f"{FLOWS}:arithmetic_flow", "--project", "lume").out.strip()
        done = lume(*config, "submit", "--flow-id", old)
        assert done.code == 6, done.err
        assert done.error_lines == [
            f"lume-scheduling: error: flow 'arithmetic' (version 1, flow id {old!r}) is archived; "
            f"run version 2 instead (flow id {new!r}) (project_name='lume')"
        ]


SECRET = "cli-s3cr3t-in-a-log-line"


@pytest.mark.real_agent
class TestWhatTheServerWrites:
    """The server's own account of a run, on the CLI's stderr (issue 10, items 1 and 6)."""

    def _backend(self, emulated: Any) -> Any:
        from lume_scheduling.adapters.server import DockerBackend

        backend = DockerBackend(emulated.config())
        backend.create_project("lume")
        return backend

    def test_a_run_created_elsewhere_shows_its_log_lines_masked(self, lume: Any, server: Path, emulated: Any) -> None:
        from lume_scheduling.adapters.testing import flows

        with self._backend(emulated) as backend:
            flow_id = backend.register_flow(flows.failing_flow, "lume", no_url=True)
            flow_run_id = backend.submit({"message": f"refused {SECRET}"}, flow_id=flow_id, env={"TOKEN": SECRET})
        deadline = time.monotonic() + 60
        # the runner ships its last log lines at exit: wait for them on the server
        while time.monotonic() < deadline and not (
            (emulated.store.get("flow_run", flow_run_id) or {}).get("state") == "Failed"
            and not emulated.agent.running(flow_run_id)
        ):
            time.sleep(0.05)
        assert any(SECRET in row["message"] for row in emulated.store.where("log", flow_run_id=flow_run_id))
        done = lume("--config", str(server), "result", flow_run_id, "--timeout", "30")
        assert done.code == 3, done.err
        assert SECRET not in done.err + done.out
        assert "refused **********" in done.err

    def test_a_run_the_server_rescheduled_is_said_so(self, lume: Any, server: Path, emulated: Any) -> None:
        from prefect.engine import state as prefect_state

        from lume_scheduling.adapters.testing import flows

        with self._backend(emulated) as backend:
            flow_id = backend.register_flow(flows.arithmetic_flow, "lume", no_url=True)
        rules, store = emulated.server.rules, emulated.store
        with store.lock:  # as services/towel/lazarus.py leaves a run whose process died
            flow_run_id = rules.create_flow_run(flow_id=flow_id, labels=["no-agent-has-this"])
            rules.set_flow_run_state(flow_run_id, prefect_state.Scheduled(message="Rescheduled by a Lazarus process."))
            store.update("flow_run", flow_run_id, times_resurrected=1)
        done = lume("--config", str(server), "--quiet", "result", flow_run_id, "--timeout", "1")
        assert done.code == 4, done.err
        assert (
            f"lume-scheduling: flow run {flow_run_id}: the server rescheduled the run after its run process "
            "stopped (attempt 1 of 3)"
        ) in done.err.splitlines()
