"""The emulated Prefect Server keeps the server's own rules: one test per rule, each
failing if the emulator dropped it.

Driven through the API, with prefect's own ``Client`` (the adapter's
`ServerClient`, a subclass bound to one server) or raw HTTP where the shape of the
answer is the point. No agent runs here: states are written as a runner would
write them, and the background services are run one turn at a time. The rules
that need prefect's agent and runner are in ``test_emulator_agents.py``.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pendulum
import prefect
import pytest
import requests
from prefect import Flow, Parameter, task
from prefect.engine import state as prefect_state
from prefect.engine.results import PrefectResult
from prefect.exceptions import ClientError
from prefect.run_configs import DockerRun
from prefect.storage import Module

from lume_scheduling.adapters.server.client import ServerClient
from lume_scheduling.adapters.testing import flows

CONFTEST = sys.modules[next(name for name in sys.modules if name.endswith("server.conftest"))]
EMULATOR = CONFTEST.emulator_module
PROJECT = "rules"
NEVER_RUN = "lume_scheduling_tests.never_run"  # storage of flows no agent ever runs
# No background turns: each test runs the services itself.
QUIET = EMULATOR.Settings.for_tests(services=False)


@task(name="identity")
def identity(x: Any) -> Any:
    return x


with Flow("parameters", storage=Module(NEVER_RUN), result=PrefectResult()) as parameters_flow:
    identity(Parameter("needed"))
    identity(Parameter("five", default=5))
    identity(Parameter("zero", default=0))

with Flow("retrying", storage=Module(NEVER_RUN), result=PrefectResult()) as retrying_flow:
    identity.copy(max_retries=2, retry_delay=pendulum.duration(seconds=0))(1)


class Api:
    """A client of one emulated server: prefect's Client, raw GraphQL, the store."""

    def __init__(self, emulated: Any) -> None:
        self.emulated = emulated
        self.server = emulated.server
        self.store = emulated.store
        self.client = ServerClient(emulated.config())
        self.client.create_project(PROJECT)

    def register(self, flow: Any = flows.arithmetic_flow, **options: Any) -> str:
        registered = flow.copy()
        registered.run_config = DockerRun(labels=["lume-services"])
        return self.client.register(registered, project_name=PROJECT, no_url=True, build=False, **options)

    def post(self, query: str, variables: Optional[dict] = None, headers: Optional[dict] = None) -> Tuple[int, dict]:
        """Raw GraphQL: (HTTP status, answer)."""
        answer = requests.post(self.server.url, json={"query": query, "variables": variables or {}},
                               headers=headers or {}, timeout=10)
        return answer.status_code, answer.json()

    def run(self, flow_id: str, **options: Any) -> str:
        # prefect's own method, over our client's transport: the emulator answers it as
        # the server answers prefect (ServerClient's create_flow_run takes fewer options).
        return prefect.Client.create_flow_run(self.client, flow_id=flow_id, **options)

    def task_runs(self, flow_run_id: str) -> Dict[str, dict]:
        """The flow run's parent task runs by task slug."""
        tasks = {t["id"]: t for t in self.store.rows("task")}
        return {tasks[r["task_id"]]["slug"]: r for r in self.store.where("task_run", flow_run_id=flow_run_id)
                if r["map_index"] == -1}

    def flow_run(self, flow_run_id: str) -> dict:
        return self.store.get("flow_run", flow_run_id)

    def logs(self, flow_run_id: str) -> List[str]:
        return [row["message"] for row in sorted(self.store.where("log", flow_run_id=flow_run_id),
                                                   key=lambda r: r["created"])]

    def start_running(self, flow_run_id: str, slug: Optional[str] = None) -> Optional[str]:
        """Set the flow run (and the task run of ``slug``) Running, as a runner does."""
        self.client.set_flow_run_state(flow_run_id, prefect_state.Running("Running flow."))
        if slug is None:
            return None
        task_run_id = self.task_runs(flow_run_id)[slug]["id"]
        self.client.set_task_run_state(task_run_id, prefect_state.Running("Starting task run."))
        return task_run_id


@pytest.fixture
def api(make_emulator: Any) -> Iterator[Api]:
    yield Api(make_emulator(agent=False, settings=QUIET))


def _message(err: pytest.ExceptionInfo) -> str:
    return str(err.value)


class TestCreatingAFlowRun:
    # server: src/prefect_server/api/runs.py, create_flow_run
    def test_unknown_parameters_are_kept_silently(self, api: Api) -> None:
        flow_run_id = api.run(api.register(), parameters={"x": 5, "nope": 1})
        assert api.flow_run(flow_run_id)["parameters"] == {"x": 5, "y": 2, "nope": 1}

    def test_truthy_defaults_are_filled_in(self, api: Api) -> None:
        flow_run_id = api.run(api.register(parameters_flow), parameters={"needed": "here"})
        # a falsy default (0) is not copied into the run: the server keeps `if param["default"]`
        assert api.flow_run(flow_run_id)["parameters"] == {"needed": "here", "five": 5}

    def test_missing_required_parameters_are_reported_as_a_python_set(self, api: Api) -> None:
        flow_id = api.register(parameters_flow)
        with pytest.raises(ClientError) as raised:
            api.run(flow_id, parameters={"five": 6})
        assert "Required parameters were not supplied: {'needed'}" in _message(raised)
        assert not api.store.rows("flow_run")

    def test_an_archived_flow_version_is_refused(self, api: Api) -> None:
        first = api.register()
        scheduled = api.run(first)
        second = api.register()  # a new version archives the old one...
        assert api.store.get("flow", first)["archived"] is True
        with pytest.raises(ClientError) as raised:
            api.run(first)
        assert f"Flow {first} is archived." in _message(raised)
        # ...and cancels its runs that were waiting
        assert api.flow_run(scheduled)["state"] == "Cancelled"
        assert api.flow_run(scheduled)["state_message"] == f"Flow {first} was archived."
        assert api.run(second)

    def test_one_pending_task_run_per_task_is_created_with_the_flow_run(self, api: Api) -> None:
        flow_id = api.register()
        flow_run_id = api.run(flow_id)
        task_runs = api.task_runs(flow_run_id)
        assert set(task_runs) == {"x", "y", "add-1", "add_more-1", "multiply-1"}
        for slug, run in task_runs.items():
            assert run["state"] == "Pending"
            assert run["serialized_state"] == {"type": "Pending", "message": "Task run created"}
            task_id = run["task_id"]
            assert str(uuid.UUID(task_id)) == task_id and task_id != slug
        # prefect's runner reads them and their task ids back
        info = api.client.get_flow_run_info(flow_run_id)
        assert {t.task_slug for t in info.task_runs} == set(task_runs)
        assert all(isinstance(t.state, prefect_state.Pending) for t in info.task_runs)

    def test_idempotency_keys_are_per_flow(self, api: Api) -> None:
        flow_id, other = api.register(), api.register(flows.twin_flow)
        first = api.run(flow_id, idempotency_key="k")
        assert api.run(flow_id, idempotency_key="k") == first
        assert len(api.store.where("flow_run_state", flow_run_id=first)) == 1  # no second Scheduled
        assert api.run(other, idempotency_key="k") != first
        assert api.run(flow_id, idempotency_key="k2") != first

    def test_a_flow_registered_again_with_the_same_key_is_the_same_flow(self, api: Api) -> None:
        first = api.register(idempotency_key="v1")
        assert api.register(idempotency_key="v1") == first
        assert api.register(idempotency_key="v2") != first

    def test_labels_come_from_the_run_config_and_are_sorted(self, api: Api) -> None:
        flow_id = api.register()
        from_config = api.run(flow_id, run_config=DockerRun(labels=["b", "a"]))
        assert api.flow_run(from_config)["labels"] == ["a", "b"]
        given = api.run(flow_id, run_config=DockerRun(labels=["b"]), labels=["z"])
        assert api.flow_run(given)["labels"] == ["z"]
        assert api.flow_run(api.run(flow_id))["labels"] == ["lume-services"]  # the flow's run config


class TestAnswers:
    # server: src/prefect_server/graphql/schema/runs.graphql, flow_run_id_payload
    def test_mutations_answer_their_payload_only(self, api: Api) -> None:
        flow_id = api.register()
        query = "mutation($input: create_flow_run_input!) { create_flow_run(input: $input) { %s } }"
        status, answer = api.post(query % "id name", {"input": {"flow_id": flow_id}})
        assert status == 400
        assert answer["errors"][0]["message"] == 'Cannot query field "name" on type "flow_run_id_payload".'
        assert not api.store.rows("flow_run")
        status, answer = api.post(query % "id", {"input": {"flow_id": flow_id}})
        assert status == 200 and set(answer["data"]["create_flow_run"]) == {"id"}

    def test_an_error_of_a_mutation_leaves_its_field_null(self, api: Api) -> None:
        status, answer = api.post(
            "mutation($input: create_flow_run_input!) { create_flow_run(input: $input) { id } }",
            {"input": {"flow_id": str(uuid.uuid4())}},
        )
        assert status == 200
        assert answer["data"] == {"create_flow_run": None}
        assert answer["errors"][0]["message"].endswith("not found")
        assert answer["errors"][0]["path"] == ["create_flow_run"]

    def test_ids_are_checked_as_uuids(self, api: Api) -> None:
        # server: graphql/scalars.py (the server's inputs) and Hasura (table queries)
        _, answer = api.post("mutation { cancel_flow_run(input: {flow_run_id: \"nope\"}) { state } }")
        assert "Could not parse UUID: nope" in answer["errors"][0]["message"]
        _, answer = api.post("query { flow_run_by_pk(id: \"nope\") { id } }")
        assert answer["errors"][0]["message"] == 'invalid input syntax for type uuid: "nope"'

    def test_hello(self, api: Api) -> None:
        assert api.post("query { hello }") == (200, {"data": {"hello": "👋"}})

    def test_task_run_info_is_read_and_created_as_the_runner_asks(self, api: Api) -> None:
        # server: src/prefect_server/graphql/runs.py, get_task_run_info and get_or_create_task_run_info
        flow_id = api.register(flows.mapped_flow)
        flow_run_id = api.run(flow_id)
        parent = api.task_runs(flow_run_id)["square-1"]
        assert isinstance(api.client.get_task_run_state(parent["id"]), prefect_state.Pending)
        child = api.client.get_task_run_info(flow_run_id, parent["task_id"], map_index=2)
        assert child.id != parent["id"] and child.version == 0 and isinstance(child.state, prefect_state.Pending)
        assert api.client.get_task_run_info(flow_run_id, parent["task_id"], map_index=2).id == child.id
        with pytest.raises(ClientError, match="Invalid task ID"):
            api.client.get_task_run_info(flow_run_id, str(uuid.uuid4()))
        with pytest.raises(ClientError, match="Invalid task run ID"):
            api.client.get_task_run_state(str(uuid.uuid4()))

    def test_heartbeats_are_recorded_and_always_answered_with_success(self, api: Api) -> None:
        # server: src/prefect_server/graphql/runs.py, resolve_update_flow_run_heartbeat (a background task)
        flow_run_id = api.run(api.register())
        assert api.flow_run(flow_run_id)["heartbeat"] is None
        api.client.update_flow_run_heartbeat(flow_run_id)
        assert api.flow_run(flow_run_id)["heartbeat"] is not None
        api.client.update_flow_run_heartbeat(str(uuid.uuid4()))  # no error for an unknown run
        task_run_id = api.task_runs(flow_run_id)["add-1"]["id"]
        _, answer = api.post("mutation { update_task_run_heartbeat(input: {task_run_id: \"%s\"}) { success } }" % task_run_id)
        assert answer == {"data": {"update_task_run_heartbeat": {"success": True}}}
        assert api.store.get("task_run", task_run_id)["heartbeat"] is not None


class TestCancel:
    # server: src/prefect_server/api/states.py, cancel_flow_run
    def _cancel(self, api: Api, flow_run_id: str) -> str:
        return api.client.cancel_flow_run(flow_run_id)

    def test_a_running_run_becomes_cancelling(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id, "add-1")
        assert self._cancel(api, flow_run_id) == "Cancelling"
        run = api.flow_run(flow_run_id)
        assert (run["state"], run["state_message"]) == ("Cancelling", "Flow run is cancelling")
        # nothing else: the task run goes on until prefect's runner notices
        assert api.task_runs(flow_run_id)["add-1"]["state"] == "Running"

    def test_a_run_that_has_not_started_becomes_cancelled(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        assert self._cancel(api, flow_run_id) == "Cancelled"
        assert api.flow_run(flow_run_id)["state_message"] == "Flow run is cancelled"

    def test_a_finished_run_is_left_alone(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id)
        api.client.set_flow_run_state(flow_run_id, prefect_state.Success("done"))
        assert self._cancel(api, flow_run_id) == "Success"
        assert api.flow_run(flow_run_id)["state"] == "Success"

    def test_an_unknown_run_is_an_invalid_flow_run_id(self, api: Api) -> None:
        unknown = str(uuid.uuid4())
        with pytest.raises(ClientError) as raised:
            self._cancel(api, unknown)
        assert f"Invalid flow run ID: {unknown}." in _message(raised)

    def test_a_cancelled_flow_run_cancels_its_unfinished_task_runs(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id, "add-1")
        done = api.task_runs(flow_run_id)["x"]["id"]
        api.client.set_task_run_state(done, prefect_state.Success("done"))
        api.client.set_flow_run_state(flow_run_id, prefect_state.Cancelled("Flow run is cancelled"))
        states = {slug: run["state"] for slug, run in api.task_runs(flow_run_id).items()}
        assert states == {"x": "Success", "y": "Cancelled", "add-1": "Cancelled", "add_more-1": "Cancelled",
                          "multiply-1": "Cancelled"}

    def test_a_task_run_cannot_start_while_its_flow_run_is_cancelling(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id, "add-1")
        self._cancel(api, flow_run_id)
        waiting = api.task_runs(flow_run_id)["multiply-1"]["id"]
        with pytest.raises(ClientError) as raised:
            api.client.set_task_run_state(waiting, prefect_state.Running("Starting task run."))
        assert (
            f"State update failed for task run ID {waiting}: provided a running state but associated "
            f"flow run {flow_run_id} is not in a running state." in _message(raised)
        )
        # a finished state is accepted
        api.client.set_task_run_state(waiting, prefect_state.Success("done"))

    def test_states_are_written_whatever_their_version(self, api: Api) -> None:
        # server: api/states.py, set_flow_run_state ("version (only for Cloud API compatibility)")
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id)
        stale = api.flow_run(flow_run_id)["version"]
        self._cancel(api, flow_run_id)
        api.client.set_flow_run_state(flow_run_id, prefect_state.Success("late"), version=stale)
        run = api.flow_run(flow_run_id)
        assert (run["state"], run["version"]) == ("Success", stale + 2)

    def test_a_run_cannot_be_submitted_twice_within_the_lock(self, api: Api) -> None:
        # server: api/states.py, submitted_state_lock
        flow_run_id = api.run(api.register())
        api.client.set_flow_run_state(flow_run_id, prefect_state.Submitted("Submitted for execution"))
        with pytest.raises(ClientError, match="State update failed: this run has already been submitted."):
            api.client.set_flow_run_state(flow_run_id, prefect_state.Submitted("Submitted for execution"))


class TestServices:
    """The zombie killer and Lazarus, one turn at a time; a heartbeat is stale once
    older than the cut-off (0 s here: every heartbeat is)."""

    STALE = QUIET.replace(zombie_heartbeat_cutoff_seconds=0.0, lazarus_heartbeat_cutoff_seconds=0.0)

    def _turn(self, api: Api, settings: Any) -> None:
        rules = api.server.rules
        EMULATOR.ZombieKiller(rules, settings).run_once()
        EMULATOR.Lazarus(rules, settings).run_once()

    def test_the_defaults_are_the_servers(self) -> None:
        defaults = EMULATOR.Settings()
        assert (
            defaults.zombie_killer_loop_seconds, defaults.zombie_heartbeat_cutoff_seconds,
            defaults.lazarus_loop_seconds, defaults.lazarus_heartbeat_cutoff_seconds,
            defaults.resurrection_attempt_limit, defaults.submitted_lock_seconds,
            defaults.queued_runs_returned_limit,
        ) == (120.0, 600.0, 600.0, 600.0, 3, 30.0, 25)

    def test_nothing_happens_while_heartbeats_are_fresh(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id, "add-1")
        self._turn(api, QUIET)  # 30 s cut-off
        assert api.flow_run(flow_run_id)["state"] == "Running"
        assert api.task_runs(flow_run_id)["add-1"]["state"] == "Running"

    def test_the_zombie_killer_fails_running_task_runs_of_a_silent_flow_run(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        task_run_id = api.start_running(flow_run_id, "add-1")
        EMULATOR.ZombieKiller(api.server.rules, self.STALE).run_once()
        task_run = api.task_runs(flow_run_id)["add-1"]
        message = (f"No heartbeat detected from the remote task; marking the task run {task_run_id} "
                   f"({task_run['name']}) as failed.")
        assert (task_run["state"], task_run["state_message"]) == ("Failed", message)
        assert message in api.logs(flow_run_id)
        assert api.flow_run(flow_run_id)["state"] == "Running"  # the flow run is Lazarus's business

    def test_the_zombie_killer_retries_a_task_with_retries_left(self, api: Api) -> None:
        flow_run_id = api.run(api.register(retrying_flow))
        api.start_running(flow_run_id, "identity-1")
        EMULATOR.ZombieKiller(api.server.rules, self.STALE).run_once()
        task_run = api.task_runs(flow_run_id)["identity-1"]
        assert task_run["state"] == "Retrying"
        assert task_run["state_message"].startswith("No heartbeat detected from the remote task; retrying the run.")
        assert "This will be retry 1 of 2." in task_run["state_message"]

    def test_the_zombie_killer_fails_a_cancelling_flow_run_that_went_silent(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id)
        api.client.cancel_flow_run(flow_run_id)
        EMULATOR.ZombieKiller(api.server.rules, self.STALE).run_once()
        run = api.flow_run(flow_run_id)
        message = "No heartbeat detected from the flow run; marking the run as failed."
        assert (run["state"], run["state_message"]) == ("Failed", message)

    def test_lazarus_reschedules_three_times_then_fails(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        for attempt in (1, 2, 3):
            api.start_running(flow_run_id)  # a runner starts it, then goes silent
            self._turn(api, self.STALE)
            run = api.flow_run(flow_run_id)
            assert (run["state"], run["state_message"]) == ("Scheduled", "Rescheduled by a Lazarus process.")
            assert run["times_resurrected"] == attempt
            assert f"Rescheduled by a Lazarus process. This is attempt {attempt}." in api.logs(flow_run_id)
            # due now: an agent's queue has it again
            assert flow_run_id in api.server.rules.get_runs_in_queue(api.store.tenant_id, labels=["lume-services"])
        api.start_running(flow_run_id)
        self._turn(api, self.STALE)
        message = "A Lazarus process attempted to reschedule this run 3 times without success. Marking as failed."
        assert (api.flow_run(flow_run_id)["state"], api.flow_run(flow_run_id)["state_message"]) == ("Failed", message)
        assert message in api.logs(flow_run_id)

    def test_lazarus_leaves_a_run_whose_task_runs_are_on_their_way(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id, "add-1")
        EMULATOR.Lazarus(api.server.rules, self.STALE).run_once()
        assert api.flow_run(flow_run_id)["state"] == "Running"

    def test_a_submitted_run_that_never_started_is_rescheduled(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        api.client.set_flow_run_state(flow_run_id, prefect_state.Submitted("Submitted for execution"))
        EMULATOR.Lazarus(api.server.rules, self.STALE).run_once()
        assert api.flow_run(flow_run_id)["state"] == "Scheduled"

    def test_the_services_run_in_the_background_at_their_intervals(self, make_emulator: Any) -> None:
        settings = EMULATOR.Settings.for_tests(
            zombie_killer_loop_seconds=0.1, zombie_heartbeat_cutoff_seconds=0.5,
            lazarus_loop_seconds=0.1, lazarus_heartbeat_cutoff_seconds=0.5,
        )
        api = Api(make_emulator(agent=False, settings=settings))
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id, "add-1")
        assert api.flow_run(flow_run_id)["state"] == "Running"  # no failure the moment it goes silent
        deadline = pendulum.now().add(seconds=20)
        while api.flow_run(flow_run_id)["state"] != "Scheduled" and pendulum.now() < deadline:
            pass
        assert api.task_runs(flow_run_id)["add-1"]["state"] == "Failed"
        assert api.flow_run(flow_run_id)["state"] == "Scheduled"


class TestLogs:
    # server: src/prefect_server/api/logs.py, create_logs
    def test_the_clients_timestamps_are_kept(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        written = pendulum.datetime(2020, 1, 2, 3, 4, 5, tz="UTC")
        api.client.write_run_logs([
            dict(flow_run_id=flow_run_id, timestamp=written.isoformat(), message="old", level="INFO", name="x"),
            dict(flow_run_id=flow_run_id, message="no timestamp", level="INFO", name="x"),
        ])
        rows = {row["message"]: row for row in api.store.where("log", flow_run_id=flow_run_id)}
        assert rows["old"]["timestamp"] == written
        assert rows["no timestamp"]["timestamp"] > written  # the server's clock

    def test_a_batch_with_an_unknown_run_is_refused_whole(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        with pytest.raises(ClientError, match="Foreign key violation."):
            api.client.write_run_logs([
                dict(flow_run_id=flow_run_id, message="kept?", level="INFO"),
                dict(flow_run_id=str(uuid.uuid4()), message="orphan", level="INFO"),
            ])
        assert not api.store.where("log", flow_run_id=flow_run_id)

    def test_logs_are_read_back_by_their_timestamps(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        base = pendulum.datetime(2021, 5, 1, tz="UTC")
        api.client.write_run_logs([
            dict(flow_run_id=flow_run_id, timestamp=base.add(seconds=s).isoformat(), message=str(s), level="INFO")
            for s in (3, 1, 2)
        ])
        _, answer = api.post(
            "query($id: uuid!, $since: timestamptz) { flow_run_by_pk(id: $id) { "
            "logs(where: {timestamp: {_gte: $since}}, order_by: {timestamp: asc}) { message } } }",
            {"id": flow_run_id, "since": base.add(seconds=2).isoformat()},
        )
        assert [log["message"] for log in answer["data"]["flow_run_by_pk"]["logs"]] == ["2", "3"]


class TestAgents:
    # server: src/prefect_server/api/agents.py, register_agent
    def test_registering_creates_a_row_and_the_same_agent_gets_it_back(self, api: Api) -> None:
        agent_id = api.client.register_agent("LocalAgent", name="a", labels=["y", "x"])
        (row,) = api.store.rows("agent")
        assert (row["id"], row["name"], row["type"], row["labels"]) == (agent_id, "a", "LocalAgent", ["x", "y"])
        assert row["last_queried"] is not None
        assert api.client.register_agent("LocalAgent", name="a", labels=["x", "y"]) == agent_id
        assert api.client.register_agent("LocalAgent", name="a", labels=["x"]) != agent_id
        assert len(api.store.rows("agent")) == 2

    def _queue(self, api: Api, labels: List[str], agent_id: Optional[str] = None) -> List[str]:
        headers = {"X-PREFECT-AGENT-ID": agent_id} if agent_id else {}
        _, answer = api.post(
            "mutation($input: get_runs_in_queue_input!) { get_runs_in_queue(input: $input) { flow_run_ids } }",
            {"input": {"tenant_id": api.store.tenant_id, "labels": labels,
                       "before": pendulum.now("UTC").add(seconds=10).isoformat()}},
            headers,
        )
        return answer["data"]["get_runs_in_queue"]["flow_run_ids"]

    def test_the_queue_gives_runs_whose_labels_the_agent_has(self, api: Api) -> None:
        flow_id = api.register()
        plain = api.run(flow_id, run_config=DockerRun(labels=["lume-services"]))
        gpu = api.run(flow_id, run_config=DockerRun(labels=["lume-services", "gpu"]))
        bare = api.run(flow_id, run_config=DockerRun(labels=[]))
        assert set(self._queue(api, ["lume-services"])) == {plain}
        assert set(self._queue(api, ["lume-services", "gpu", "more"])) == {plain, gpu}
        # a run without labels is never handed to a labelled agent, only to an unlabelled one
        assert set(self._queue(api, [])) == {bare}

    def test_the_queue_holds_scheduled_runs_only(self, api: Api) -> None:
        flow_id = api.register()
        started = api.run(flow_id)
        api.client.set_flow_run_state(started, prefect_state.Submitted("Submitted for execution"))
        waiting = api.run(flow_id)
        later = api.run(flow_id, scheduled_start_time=pendulum.now("UTC").add(hours=1))
        assert self._queue(api, ["lume-services"]) == [waiting]
        assert later not in self._queue(api, ["lume-services"])

    def test_polling_updates_last_queried_and_rows_stay(self, api: Api) -> None:
        agent_id = api.client.register_agent("LocalAgent", name="a", labels=["lume-services"])
        before = api.store.get("agent", agent_id)["last_queried"]
        self._queue(api, ["lume-services"], agent_id)
        polled = api.store.get("agent", agent_id)["last_queried"]
        assert polled > before
        self._queue(api, ["lume-services"])  # without the agent's header: not that agent
        assert api.store.get("agent", agent_id)["last_queried"] == polled


class TestQueries:
    # server: services/hasura/migrations/metadata.yaml; docker/infrastructure/docker-compose.yml
    def test_a_null_comparison_is_no_condition(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        _, answer = api.post("query { flow_run(where: {id: {_eq: null}}) { id } }")
        assert [row["id"] for row in answer["data"]["flow_run"]] == [flow_run_id]

    def test_a_condition_on_an_array_relationship_needs_one_matching_row(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id, "add-1")
        query = "query($s: String) { flow_run(where: {task_runs: {state: {_eq: $s}}}) { id } }"
        assert api.post(query, {"s": "Running"})[1]["data"]["flow_run"] == [{"id": flow_run_id}]
        assert api.post(query, {"s": "Success"})[1]["data"]["flow_run"] == []

    def test_nulls_sort_last_ascending_and_first_descending(self, api: Api) -> None:
        flow_run_id = api.run(api.register())
        api.start_running(flow_run_id, "add-1")  # only add-1 has a start time
        query = "query($id: uuid!) { task_run(where: {flow_run_id: {_eq: $id}}, order_by: {start_time: %s}) { id } }"
        ascending = api.post(query % "asc", {"id": flow_run_id})[1]["data"]["task_run"]
        descending = api.post(query % "desc", {"id": flow_run_id})[1]["data"]["task_run"]
        add = api.task_runs(flow_run_id)["add-1"]["id"]
        assert ascending[0]["id"] == add and descending[-1]["id"] == add

    def test_unknown_fields_are_refused(self, api: Api) -> None:
        status, answer = api.post("query { flow_run { id no_such_column } }")
        assert status == 400
        assert answer["errors"][0]["message"] == "field \"no_such_column\" not found in type: 'flow_run'"
