"""The emulated Prefect Server with prefect's own agent and runner: the whole API
they use is answered, and the rules a real deployment shows only with them
(cancelling leaves the process to the runner, a dead process is noticed through
its heartbeats, logs arrive in batches, agent rows outlive agents, labels pick
the agent).

Every flow run here is executed by prefect's LocalAgent and ``prefect execute
flow-run`` (`LocalAgentKind`, or the kind the ``agent_kind`` fixture gives).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest
from prefect.run_configs import DockerRun

from lume_scheduling.adapters.server import DockerBackend
from lume_scheduling.adapters.server.client import ServerClient
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowRunState

CONFTEST = sys.modules[next(name for name in sys.modules if name.endswith("server.conftest"))]
EMULATOR = CONFTEST.emulator_module
PROJECT = CONFTEST.PROJECT

pytestmark = pytest.mark.real_agent

# Lazarus may submit a run again 1 s after its last submission (30 s by default).
CRASH_SETTINGS = EMULATOR.Settings.for_tests(submitted_lock_seconds=1.0)


def _wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout} s")


def _task_run(emulated: Any, flow_run_id: str, slug: str) -> Dict[str, Any]:
    task_ids = {t["id"] for t in emulated.store.rows("task") if t["slug"] == slug}
    (run,) = [r for r in emulated.store.where("task_run", flow_run_id=flow_run_id)
              if r["task_id"] in task_ids and r["map_index"] == -1]
    return run


def _watch(emulated: Any, flow_run_id: str, seconds: float) -> List[Any]:
    """(flow run state, hang task run state) every 20 ms for ``seconds``."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append((emulated.store.get("flow_run", flow_run_id)["state"], _task_run(emulated, flow_run_id, "hang-1")["state"]))
        time.sleep(0.02)
    return seen


def _states(emulated: Any, flow_run_id: str) -> List[str]:
    rows = sorted(emulated.store.where("flow_run_state", flow_run_id=flow_run_id), key=lambda r: r["version"])
    return [row["state"] for row in rows]


def _logs(emulated: Any, flow_run_id: str) -> List[Dict[str, Any]]:
    return sorted(emulated.store.where("log", flow_run_id=flow_run_id), key=lambda r: r["created"])


@pytest.fixture
def docker(emulator: Any) -> Iterator[DockerBackend]:
    with DockerBackend(emulator.config()) as backend:
        backend.create_project(PROJECT)
        yield backend


def _flow_id(backend: Any, flow: Any) -> str:
    return backend.register_flow(flow, PROJECT, no_url=True)


class TestTheApiTheyUse:
    def test_every_request_of_the_agent_and_the_runner_is_answered(self, make_emulator: Callable[..., Any]) -> None:
        emulated = make_emulator()
        with DockerBackend(emulated.config()) as backend:
            backend.create_project(PROJECT)
            assert backend.run_and_return({"x": 2}, task_name="add", flow_id=_flow_id(backend, flows.arithmetic_flow),
                                          timeout=60) == 4
            record = backend.get_result(backend.submit({}, flow_id=_flow_id(backend, flows.mapped_flow)), timeout=60)
            assert record.values["square-1"] == [1, 4, 9]
            failing = backend.submit({}, flow_id=_flow_id(backend, flows.failing_flow))
            assert backend.wait(failing, timeout=60) is FlowRunState.FAILED
            _wait_for(lambda: not any(a.running(failing) for a in emulated.agents), what="the runners' exit")
        theirs = emulated.server.requests_of(EMULATOR.AGENT) + emulated.server.requests_of(EMULATOR.RUNNER)
        refused = [(r.names, r.status, r.errors) for r in theirs if r.errors or r.status != 200]
        assert refused == []
        used = {name for request in theirs for name in request.names}
        assert {
            "register_agent", "hello", "tenant", "get_runs_in_queue", "flow_run", "set_flow_run_states",
            "write_run_logs", "flow_run_by_pk", "update_flow_run_heartbeat", "get_or_create_task_run_info",
            "set_task_run_states",
        } <= used, used


class TestCancel:
    def test_cancel_leaves_the_process_to_prefects_runner(self, emulator: Any, docker: DockerBackend) -> None:
        flow_run_id = docker.submit({"seconds": 60.0}, flow_id=_flow_id(docker, flows.hanging_flow))
        _wait_for(lambda: _task_run(emulator, flow_run_id, "hang-1")["state"] == "Running", what="the task running")
        client = ServerClient(emulator.config())
        assert client.cancel_flow_run(flow_run_id) == "Cancelling"
        assert emulator.agent.running(flow_run_id)  # the server stops nothing
        # prefect's runner sees Cancelling (its own check), interrupts the task and
        # writes Cancelled; the server then cancels the unfinished task runs
        _wait_for(lambda: emulator.store.get("flow_run", flow_run_id)["state"] == "Cancelled", what="Cancelled")
        assert _states(emulator, flow_run_id)[-2:] == ["Cancelling", "Cancelled"]
        assert _task_run(emulator, flow_run_id, "hang-1")["state"] == "Cancelled"
        _wait_for(lambda: not emulator.agent.running(flow_run_id), what="the runner's exit")
        messages = [row["message"] for row in _logs(emulator, flow_run_id)]
        assert "Flow run has been cancelled, cancelling active tasks" in messages


class TestCrash:
    def test_a_dead_runner_is_failed_by_the_zombie_killer_and_rescheduled_by_lazarus(
        self, make_emulator: Callable[..., Any]
    ) -> None:
        emulated = make_emulator(settings=CRASH_SETTINGS)
        with DockerBackend(emulated.config()) as backend:
            backend.create_project(PROJECT)
            flow_run_id = backend.submit({"seconds": 60.0}, flow_id=_flow_id(backend, flows.hanging_flow))
            _wait_for(lambda: _task_run(emulated, flow_run_id, "hang-1")["state"] == "Running", what="the task running")
            seen: List[Any] = []
            watcher = threading.Thread(target=lambda: seen.extend(_watch(emulated, flow_run_id, 0.5)))
            watcher.start()
            # the server notices after 3 s here (10 minutes by default)
            emulated.crash_flow_run(flow_run_id, notice_after=3.0)
            watcher.join()
            # no failure the moment the process died: its heartbeat was not stale yet
            assert seen and all(state == ("Running", "Running") for state in seen), seen
            # the zombie killer failed the task run, Lazarus rescheduled the flow run; the
            # agent runs it again, and the rerun ends Failed (its task has failed), which
            # the backend reports as the crash it was
            assert backend.wait(flow_run_id, timeout=60) is FlowRunState.CRASHED
        task_run = _task_run(emulated, flow_run_id, "hang-1")
        assert task_run["state_message"] == (
            f"No heartbeat detected from the remote task; marking the task run {task_run['id']} "
            f"({task_run['name']}) as failed."
        )
        states = _states(emulated, flow_run_id)
        assert states[:4] == ["Scheduled", "Submitted", "Running", "Scheduled"]
        assert states[4:] == ["Submitted", "Running", "Failed"]
        run = emulated.store.get("flow_run", flow_run_id)
        assert (run["times_resurrected"], run["state_message"]) == (1, "Some reference tasks failed.")
        messages = [row["message"] for row in _logs(emulated, flow_run_id)]
        assert "Rescheduled by a Lazarus process. This is attempt 1." in messages


class TestLogs:
    def test_the_runners_last_log_batch_lands_after_the_final_state(self, emulator: Any, docker: DockerBackend) -> None:
        flow_run_id = docker.submit({}, flow_id=_flow_id(docker, flows.arithmetic_flow))
        assert docker.wait(flow_run_id, timeout=60) is FlowRunState.SUCCESS
        _wait_for(lambda: not emulator.agent.running(flow_run_id), what="the runner's exit")
        final = max(emulator.store.where("flow_run_state", flow_run_id=flow_run_id), key=lambda r: r["version"])
        assert final["state"] == "Success"
        runner = [row for row in _logs(emulator, flow_run_id) if str(row["name"]).startswith("prefect.")]
        assert any(row["message"] == "Flow run SUCCESS: all reference tasks succeeded" for row in runner)
        # written before the final state (the client's timestamp), stored after it
        late = [row for row in runner if row["timestamp"] < final["timestamp"] < row["created"]]
        assert late, [(row["message"], row["timestamp"], row["created"]) for row in runner]


class TestAgents:
    def test_an_agents_row_outlives_the_agent(self, make_emulator: Callable[..., Any]) -> None:
        emulated = make_emulator()
        agent = emulated.agent
        agent.wait_registered(emulated.server)
        (row,) = emulated.store.rows("agent")
        assert (row["name"], row["type"], row["labels"]) == (agent.name, "LocalAgentForContainerRuns", ["lume-services"])
        first = row["last_queried"]
        _wait_for(lambda: emulated.store.get("agent", row["id"])["last_queried"] > first, what="a later poll")
        agent.stop()
        stopped = emulated.store.get("agent", row["id"])["last_queried"]
        time.sleep(1.0)
        (after,) = emulated.store.rows("agent")
        assert after["id"] == row["id"] and after["last_queried"] == stopped

    def test_a_run_without_labels_waits_for_an_agent_without_labels(self, make_emulator: Callable[..., Any]) -> None:
        emulated = make_emulator()
        emulated.agent.wait_registered(emulated.server)
        with DockerBackend(emulated.config()) as backend:
            backend.create_project(PROJECT)
            flow_id = _flow_id(backend, flows.arithmetic_flow)
            client = ServerClient(emulated.config())
            bare = client.create_flow_run(flow_id=flow_id, run_config=DockerRun(labels=[]))
            labelled = backend.submit({}, flow_id=flow_id)
            assert backend.wait(labelled, timeout=60) is FlowRunState.SUCCESS
            assert backend.get_state(bare) is FlowRunState.SCHEDULED  # the labelled agent never took it
            emulated.start_agent(labels=[])
            assert backend.wait(bare, timeout=60) is FlowRunState.SUCCESS
