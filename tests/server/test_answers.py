"""Answers of a Prefect Server that the backend reads, mapped to domain errors
(issue 10, item 5): an archived flow version, cancel of an unknown run, missing
parameters the server itself reports, and malformed answers of every query and
mutation the adapter sends.

Malformed answers are real HTTP answers of the emulated server (its scripted
faults rewrite the answer of one request after the server ran it), not a mocked
client method. No agent is needed: runs are written straight into the emulator.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prefect.engine import state as prefect_state
from prefect.engine.results import PrefectResult

from lume_scheduling.adapters.server import DockerBackend, KubernetesBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import (
    BackendUnavailableError,
    FlowArchivedError,
    FlowNotFoundError,
    FlowParameterError,
    FlowRunNotFoundError,
    FlowRunState,
    SchedulingError,
)

CONFTEST = sys.modules[next(name for name in sys.modules if name.endswith("server.conftest"))]
PROJECT = CONFTEST.PROJECT
seed_run = CONFTEST.seed_run
SECRET = "answers-secret-0123456789"
NO_AGENT = ["seeded-no-agent"]  # the label seed_run gives its runs


def _quick(emulated: Any, **overrides: Any) -> Any:
    """Settings for a server without agents: no retries, short polls and waits."""
    fields: Dict[str, Any] = dict(request_retries=0, request_timeout=5.0, cancel_timeout=3.0, task_run_page_size=2)
    fields.update(overrides)
    return emulated.config(**fields)


# --------------------------------------------------------------- known refusals


class TestArchivedFlowVersions:
    def test_running_an_archived_version_names_the_flow_and_its_newest_version(self, make_emulator: Any) -> None:
        emulated = make_emulator(agent=False)
        with DockerBackend(_quick(emulated)) as backend:
            backend.create_project(PROJECT)
            old = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            # Registering the flow again archives the version before (api/flows.py).
            new = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            with pytest.raises(FlowArchivedError) as raised:
                backend.run({"x": 1}, flow_id=old)
        error = raised.value
        assert isinstance(error, FlowNotFoundError)
        assert (error.flow_id, error.flow_name, error.project_name) == (old, "arithmetic", PROJECT)
        assert (error.version, error.newest_flow_id, error.newest_version) == (1, new, 2)
        assert str(error) == (
            f"flow 'arithmetic' (version 1, flow id {old!r}) is archived; run version 2 instead "
            f"(flow id {new!r}) (project_name={PROJECT!r})"
        )
        assert not emulated.store.where("flow_run", flow_id=old)

    def test_a_flow_whose_every_version_is_archived(self, make_emulator: Any) -> None:
        emulated = make_emulator(agent=False)
        with KubernetesBackend(_quick(emulated)) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            emulated.server.rules.archive_flow(flow_id)
            # A backend that never saw the flow reads it first: the check is the server's.
            with KubernetesBackend(_quick(emulated)) as other:
                with pytest.raises(FlowArchivedError) as raised:
                    other.submit({}, flow_id=flow_id)
        assert raised.value.newest_flow_id is None
        assert str(raised.value) == (
            f"flow 'arithmetic' (version 1, flow id {flow_id!r}) is archived (project_name={PROJECT!r})"
        )

    def test_without_the_newest_version_when_the_server_cannot_say(self, make_emulator: Any) -> None:
        emulated = make_emulator(agent=False)
        with DockerBackend(_quick(emulated)) as backend:
            backend.create_project(PROJECT)
            old = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            # The flow is known from its registration: the only flow_by_pk asked for is
            # the lookup of the newest version, which gets a broken answer.
            emulated.server.faults.rewrite_next(Replace({"data": "garbage"}), operation="flow_by_pk")
            with pytest.raises(FlowArchivedError) as raised:
                backend.run({}, flow_id=old)
        assert (raised.value.newest_flow_id, raised.value.version) == (None, None)
        assert str(raised.value) == f"flow 'arithmetic' (flow id {old!r}) is archived (project_name={PROJECT!r})"
        assert emulated.server.faults.pending() == 0


class TestUnknownRuns:
    def test_cancel_of_a_run_deleted_meanwhile_is_flow_run_not_found(self, make_emulator: Any) -> None:
        emulated = make_emulator(agent=False)
        with DockerBackend(_quick(emulated)) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            flow_run_id = seed_run(emulated, flow_id, prefect_state.Scheduled())
            # Another user deletes the run between our state query and our cancel: the
            # server answers "Invalid flow run ID: <id>." (api/states.py).
            emulated.server.faults.before_next(
                "cancel_flow_run", lambda: emulated.store.delete("flow_run", [flow_run_id])
            )
            with pytest.raises(FlowRunNotFoundError) as raised:
                backend.cancel(flow_run_id)
        assert raised.value.flow_run_id == flow_run_id
        assert f"Invalid flow run ID: {flow_run_id}." in emulated.server.log[-1].errors


class TestParametersTheServerRefuses:
    def test_missing_required_parameters_in_the_servers_words_are_a_flow_parameter_error(
        self, make_emulator: Any
    ) -> None:
        emulated = make_emulator(agent=False)
        with DockerBackend(_quick(emulated)) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(flows.required_flow, PROJECT, no_url=True)
            group = emulated.store.tables["flow"][flow_id]["flow_group_id"]
            emulated.store.update("flow_group", group, default_parameters={"x": 5})
            # The default that made our check pass is removed before the run is created:
            # the server reports the missing parameter as a Python set (api/runs.py).
            emulated.server.faults.before_next(
                "create_flow_run", lambda: emulated.store.update("flow_group", group, default_parameters={})
            )
            with pytest.raises(FlowParameterError) as raised:
                backend.run({}, flow_id=flow_id)
        assert (raised.value.flow_name, raised.value.missing) == ("required", ("x",))
        assert str(raised.value) == (
            "flow 'required' needs parameter 'x'; its parameters are: scale (default 1), x (required)"
        )
        assert "Required parameters were not supplied: {'x'}" in emulated.server.log[-1].errors


# ------------------------------------------------------------- malformed answers

# The malformed answers the issue lists, and more of the same kinds.
BROKEN_ANSWERS: List[Any] = [
    None,
    [],
    "garbage",
    5,
    {},
    {"data": None},
    {"data": {}},
    {"data": "garbage"},
    {"data": []},
    {"errors": "boom"},
    {"errors": []},
    {"errors": None},
    {"errors": [5]},
    {"errors": [{}]},
    {"errors": [{"message": 5}]},
]
WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.sampled_from(["", "garbage", "not-a-uuid", "2020-01-01T00:00:00+00:00"]),
    st.just([]),
    st.just({}),
    st.just(["garbage"]),
    st.just([{}]),
    st.sampled_from(
        [
            {"type": "NoSuchState"},
            {"type": 5},
            {"message": "no type"},
            {"type": "Success", "message": "ok", "_result": "garbage"},
            {"type": "Success", "context": "garbage"},
            {"type": "Failed", "cached_inputs": 5},
        ]
    ),
)


def _places(value: Any, path: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    """Every place under ``value`` (keys of objects, indexes of lists), outermost first."""
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found.extend(_places(inner, path + (key,)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found.extend(_places(inner, path + (index,)))
    return found


@dataclass(frozen=True)
class Replace:
    """The whole answer replaced by ``answer``."""

    answer: Any

    def __call__(self, real: Any) -> Any:
        return self.answer


@dataclass(frozen=True)
class Corrupt:
    """One place of the real answer's ``data`` (the ``pick``-th, cycling) given a
    wrong ``value``, or left out (``drop``)."""

    pick: int
    value: Any
    drop: bool

    def __call__(self, real: Any) -> Any:
        if not isinstance(real, dict) or not isinstance(real.get("data"), dict):
            return real
        places = _places(real["data"])[1:] or [()]
        place = places[self.pick % len(places)]
        if not place:
            return {**real, "data": self.value}
        *parents, last = place
        target = real["data"]
        for step in parents:
            target = target[step]
        if self.drop and isinstance(target, dict):
            del target[last]
        else:
            target[last] = self.value
        return real


def _unchanged(answer: Any) -> Any:
    return answer


MALFORMED = st.one_of(
    st.sampled_from(BROKEN_ANSWERS).map(Replace),
    st.builds(Corrupt, st.integers(0, 200), WRONG_VALUES, st.booleans()),
)


class Seeded:
    """What one emulator holds for the property: a project, two flows, and runs."""

    def __init__(self, emulated: Any) -> None:
        self.emulated = emulated
        self.url = emulated.url
        with DockerBackend(_quick(emulated)) as backend:
            backend.create_project(PROJECT)
            self.flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            self.required_id = backend.register_flow(flows.required_flow, PROJECT, no_url=True)
        group = emulated.store.tables["flow"][self.required_id]["flow_group_id"]
        emulated.store.update("flow_group", group, default_parameters={"x": 5})
        value = lambda v: prefect_state.Success(result=PrefectResult().write(v))  # noqa: E731
        self.succeeded = seed_run(
            emulated,
            self.flow_id,
            prefect_state.Success("All reference tasks succeeded."),
            [("add-1", "add", -1, value(3)), ("add_more-1", "add_more", -1, value(13)), ("multiply-1", "multiply", -1, value(2))],
        )
        self.failed = seed_run(
            emulated,
            self.flow_id,
            prefect_state.Failed("Some reference tasks failed."),
            [("add-1", "add", -1, prefect_state.Failed("Error during execution of task: ValueError('no')"))],
        )
        with emulated.store.lock:
            run = emulated.store.tables["flow_run"][self.failed]
            emulated.store.update("flow_run", self.failed, run_config={**(run["run_config"] or {}), "env": {"TOKEN": SECRET}})
        self.scheduled = seed_run(emulated, self.flow_id, prefect_state.Scheduled())
        # A run created elsewhere whose log line quotes its env: the backend reads its
        # run config to mask the line.
        self.logged = seed_run(emulated, self.flow_id, prefect_state.Failed("Some reference tasks failed."))
        with emulated.store.lock:
            run = emulated.store.tables["flow_run"][self.logged]
            emulated.store.update("flow_run", self.logged, run_config={**(run["run_config"] or {}), "env": {"TOKEN": SECRET}})
        emulated.server.rules.create_logs(
            [dict(tenant_id=emulated.store.tenant_id, flow_run_id=self.logged, name="prefect.TaskRunner",
                  message=f"refused {SECRET}", level="ERROR")]
        )

    def cancellable(self) -> str:
        return seed_run(self.emulated, self.flow_id, prefect_state.Scheduled())


# scenario -> (what it does through the port, the top-level fields its requests ask
# for, the operation names its errors may carry)
Scenario = Tuple[Callable[[Any, Seeded], Any], Sequence[str], Sequence[str]]
SCENARIOS: Dict[str, Scenario] = {
    "create_project": (lambda b, s: b.create_project("another"), ["tenant", "create_project"], ["create_project"]),
    "register_flow": (
        lambda b, s: b.register_flow(flows.twin_flow, PROJECT),  # prints its note: flow_by_pk with ui_url
        ["project", "create_flow_from_compressed_string", "register_tasks", "register_edges",
         "set_schedule_active", "flow_by_pk"],
        ["register_flow"],
    ),
    "load_flow": (lambda b, s: b.load_flow("arithmetic", PROJECT), ["flow"], ["load_flow"]),
    "run": (lambda b, s: b.run({"x": 2}, flow_id=s.flow_id), ["flow_by_pk", "create_flow_run"], ["run"]),
    "run with defaults": (lambda b, s: b.submit({}, flow_id=s.required_id), ["flow_by_pk", "create_flow_run"], ["run"]),
    "get_state": (lambda b, s: b.get_state(s.succeeded), ["flow_run_by_pk"], ["get_state"]),
    "wait": (lambda b, s: b.wait(s.succeeded, timeout=5), ["flow_run_by_pk"], ["wait"]),
    "wait for an agent": (lambda b, s: b.wait(s.scheduled, timeout=0.2), ["flow_run_by_pk", "agent"], ["wait"]),
    # the second flow_run_by_pk: the run config, read to mask the run's log lines
    "wait for a run created elsewhere": (
        lambda b, s: b.wait(s.logged, timeout=5), ["flow_run_by_pk", "flow_run_by_pk#2"], ["wait"]
    ),
    "result": (lambda b, s: b.result(s.succeeded, "add", timeout=5), ["flow_run_by_pk", "task_run"], ["wait", "get_result"]),
    "get_result": (lambda b, s: b.get_result(s.failed, timeout=5), ["flow_run_by_pk", "task_run"], ["wait", "get_result"]),
    "cancel": (lambda b, s: b.cancel(s.cancellable()), ["flow_run_by_pk", "cancel_flow_run"], ["get_state", "cancel", "wait"]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_only_domain_errors_cross_the_port_whatever_the_server_answers(name: str, make_emulator: Any) -> None:
    emulated = make_emulator(agent=False)
    seeded = Seeded(emulated)
    call, fields, operations = SCENARIOS[name]
    faults = emulated.server.faults

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(field=st.sampled_from(list(fields)), malformed=MALFORMED)
    def property_(field: str, malformed: Any) -> None:
        faults.reset()
        operation, _, nth = field.partition("#")
        for _ in range(int(nth or 1) - 1):
            faults.rewrite_next(_unchanged, operation=operation)  # the earlier requests pass
        faults.rewrite_next(malformed, operation=operation)
        config = _quick(emulated, agent_check_after=0.01, ui_url="http://ui.invalid")
        with DockerBackend(config) as backend:
            try:
                call(backend, seeded)
                event("no error")
            except BackendUnavailableError as err:
                assert err.backend == seeded.url, err
                assert str(err.reason).split(":")[0] in operations, err
                assert SECRET not in str(err)
                event("BackendUnavailableError")
            except SchedulingError as err:
                assert SECRET not in str(err)
                event(type(err).__name__)
        assert faults.pending() == 0, f"no request asked for {field}: the malformed answer was never sent"

    property_()


class TestEachMalformedAnswerIsNamed:
    @pytest.mark.parametrize("answer", BROKEN_ANSWERS, ids=repr)
    def test_a_broken_answer_to_a_state_query(self, answer: Any, make_emulator: Any) -> None:
        emulated = make_emulator(agent=False)
        with DockerBackend(_quick(emulated)) as backend:
            emulated.server.faults.rewrite_next(Replace(answer), operation="flow_run_by_pk")
            with pytest.raises(BackendUnavailableError) as raised:
                backend.get_state("3f2c8a8e-0000-4000-8000-000000000000")
        assert raised.value.backend == emulated.url
        assert str(raised.value.reason).startswith("get_state: the server's answer is malformed: ")

    @pytest.mark.parametrize(
        "corrupt, problem",
        [
            (lambda d: d["flow_run_by_pk"].update(serialized_state={"type": "NoSuchState"}),
             "data.flow_run_by_pk.serialized_state.type: expected the name of a Prefect state, got 'NoSuchState'"),
            (lambda d: d["flow_run_by_pk"].update(serialized_state="Success"),
             "data.flow_run_by_pk.serialized_state: expected a serialized Prefect state or null, got a string"),
            (lambda d: d["flow_run_by_pk"].pop("task_runs"),
             "data.flow_run_by_pk.task_runs: expected a list, but the field is missing"),
            (lambda d: d["flow_run_by_pk"]["task_runs"][0].update(map_index="0"),
             "data.flow_run_by_pk.task_runs[0].map_index: expected an integer, got a string"),
            (lambda d: d["flow_run_by_pk"].update(logs={"id": 1}),
             "data.flow_run_by_pk.logs: expected a list, got an object"),
            (lambda d: d.update(flow_run_by_pk="garbage"),
             "data.flow_run_by_pk: expected an object or null, got a string"),
        ],
    )
    def test_a_wrong_field_is_named_with_what_was_expected(
        self, corrupt: Callable[[Dict[str, Any]], Any], problem: str, make_emulator: Any
    ) -> None:
        emulated = make_emulator(agent=False)
        seeded = Seeded(emulated)

        def rewrite(answer: Any) -> Any:
            corrupt(answer["data"])
            return answer

        with DockerBackend(_quick(emulated)) as backend:
            emulated.server.faults.rewrite_next(rewrite, operation="flow_run_by_pk")
            with pytest.raises(BackendUnavailableError) as raised:
                backend.wait(seeded.succeeded, timeout=5)
            assert str(raised.value) == (
                f"scheduling backend at {emulated.url} is unavailable: wait: the server's answer is malformed: {problem}"
            )
            # The next, good answer is read as usual.
            assert backend.wait(seeded.succeeded, timeout=5) is FlowRunState.SUCCESS

    def test_a_malformed_env_is_reported_without_its_values(self, make_emulator: Any) -> None:
        emulated = make_emulator(agent=False)
        seeded = Seeded(emulated)

        def rewrite(answer: Any) -> Any:
            answer["data"]["flow_run_by_pk"]["run_config"]["env"] = {"TOKEN": [SECRET]}
            return answer

        with DockerBackend(_quick(emulated)) as backend:
            backend.wait(seeded.failed, timeout=5)
            # The run has ended: the record needs only the run's env, to mask it.
            emulated.server.faults.rewrite_next(rewrite, operation="flow_run_by_pk")
            with pytest.raises(BackendUnavailableError) as raised:
                backend.get_result(seeded.failed)
        assert str(raised.value.reason) == (
            "get_result: the server's answer is malformed: "
            "data.flow_run_by_pk.run_config.env.TOKEN: expected a string, got a list of 1"
        )
        assert SECRET not in str(raised.value)
