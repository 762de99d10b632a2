"""The check that an agent would take a run that stays scheduled (issue 10, item 3).

On a real server the ``agent`` table keeps the row of every agent that ever
registered, with its ``last_queried``; the run queue hands a run only to an agent
that has all its labels, and a run without labels only to an agent without labels
(``api/runs.py``, ``get_runs_in_queue``). The check counts an agent only if both
hold, and its warning names the run's labels and every agent seen. The agents
here are prefect's own LocalAgent processes.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Callable, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lume_scheduling.adapters.server import DockerBackend
from lume_scheduling.adapters.server.backend import would_be_handed
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowRunTimeoutError

CONFTEST = sys.modules[next(name for name in sys.modules if name.endswith("server.conftest"))]
PROJECT = CONFTEST.PROJECT
EMULATOR = CONFTEST.emulator_module
LOGGER = "lume_scheduling.server"


def _warnings(caplog: pytest.LogCaptureFixture, flow_run_id: str) -> List[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.levelno == logging.WARNING and getattr(r, "flow_run_id", None) == flow_run_id
        and "no agent that would be handed it" in r.getMessage()
    ]


def _scheduled_run(backend: DockerBackend, labels: List[str]) -> str:
    """A run with ``labels`` followed until its short time-out (it stays scheduled)."""
    flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
    with pytest.raises(FlowRunTimeoutError) as raised:
        backend.run_and_return(flow_id=flow_id, labels=labels, timeout=0.5)
    return raised.value.flow_run_id


@pytest.mark.real_agent
class TestTheCheckFires:
    def test_for_an_agent_that_stopped_polling(self, make_emulator: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER)
        emulated = make_emulator()
        agent = emulated.agent
        agent.wait_registered(emulated.server)
        agent.stop()  # its row stays, with its last poll (as on a real server)
        time.sleep(1.2)
        with DockerBackend(emulated.config(agent_check_after=0.05, agent_stale_after=1.0)) as backend:
            backend.create_project(PROJECT)
            flow_run_id = _scheduled_run(backend, ["lume-services"])
        (warning,) = _warnings(caplog, flow_run_id)
        assert "has polled the server in the last 1 s: the run's labels are ['lume-services']" in warning
        assert f"agents seen: {agent.name!r} with labels ['lume-services'] (last polled " in warning

    def test_for_a_run_without_labels_and_a_labelled_agent(self, emulator: Any, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER)
        with DockerBackend(emulator.config(agent_check_after=0.05)) as backend:
            backend.create_project(PROJECT)
            flow_run_id = _scheduled_run(backend, [])
        (warning,) = _warnings(caplog, flow_run_id)
        assert "the run's labels are []" in warning
        assert f"{emulator.agent.name!r} with labels ['lume-services'] (last polled " in warning
        assert "a run without labels goes only to an agent without labels" in warning

    def test_for_an_agent_that_lacks_one_of_the_runs_labels(self, emulator: Any, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER)
        with DockerBackend(emulator.config(agent_check_after=0.05)) as backend:
            backend.create_project(PROJECT)
            flow_run_id = _scheduled_run(backend, ["lume-services", "gpu"])
        (warning,) = _warnings(caplog, flow_run_id)
        assert "the run's labels are ['gpu', 'lume-services']" in warning
        assert f"{emulator.agent.name!r} with labels ['lume-services']" in warning


@pytest.mark.real_agent
def test_no_warning_when_a_live_agent_would_be_handed_the_run(emulator: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    faults = emulator.server.faults
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(30)

    # The agent's next poll is held until the backend's check has been answered, so
    # that the run is still scheduled when the check is made (the agent polled just
    # before: it is live).
    faults.before_next("get_runs_in_queue", hold, source=EMULATOR.AGENT)
    try:
        assert held.wait(30), "the agent did not poll"
        with DockerBackend(emulator.config(agent_check_after=0.05)) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            faults.before_next("agent", release.set)
            assert backend.run_and_return(flow_id=flow_id, task_name="add", timeout=30) == 3
    finally:
        release.set()
    assert ["agent"] in emulator.server.requests
    assert "no agent that would be handed it" not in caplog.text


LABELS = st.lists(st.sampled_from(["a", "b", "gpu", "lume-services"]), max_size=3, unique=True)


@settings(max_examples=60, deadline=None, database=None)
@given(run_labels=LABELS, agent_labels=LABELS)
def test_would_be_handed_is_the_servers_queue_rule(run_labels: List[str], agent_labels: List[str]) -> None:
    """Checked against the emulated server's own queue (``get_runs_in_queue``),
    which follows ``api/runs.py``."""
    server = EMULATOR.EmulatedServer()  # not started: its rules are enough
    rules, store = server.rules, server.store
    project = store.insert("project", tenant_id=store.tenant_id, name="p")["id"]
    group = store.insert("flow_group", tenant_id=store.tenant_id, name="f")["id"]
    flow_id = store.insert("flow", tenant_id=store.tenant_id, project_id=project, flow_group_id=group, name="f")["id"]
    flow_run_id = rules.create_flow_run(flow_id=flow_id, labels=run_labels)
    queued = rules.get_runs_in_queue(store.tenant_id, labels=agent_labels)
    assert would_be_handed(run_labels, agent_labels) is (flow_run_id in queued)
