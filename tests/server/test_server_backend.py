"""DockerBackend and KubernetesBackend against the emulated Prefect Server, their
flow runs executed by prefect's own LocalAgent and ``prefect execute flow-run``.

Grouped by use case: configuration, registering flows, mapping run configs,
following runs and reading results, final states, time-outs and cancellation,
faults of the server, and the absence of global state. Tests marked
``xfail(strict=True, reason="issue 10: ...")`` state what a user should get on a
real server where the adapter does not do it yet.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import prefect
import pydantic
import pytest
from prefect import Flow, task
from prefect.engine import state as prefect_state
from prefect.engine.results import LocalResult, PrefectResult

from lume_scheduling.adapters.server import (
    DockerBackend,
    KubernetesBackend,
    PrefectServerConfig,
    default_job_template,
    flow_run_state,
    to_prefect_run_config,
)
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import (
    BackendUnavailableError,
    DockerRunConfig,
    EmptyResultError,
    FlowFailedError,
    FlowNotFoundError,
    FlowRunCancelledError,
    FlowRunNotFoundError,
    FlowRunState,
    FlowRunTimeoutError,
    KubernetesRunConfig,
    TaskNotInFlowError,
)

CONFTEST = sys.modules[next(name for name in sys.modules if name.endswith("server.conftest"))]
PROJECT = CONFTEST.PROJECT


@pytest.fixture
def late_batches(backend: Any, emulator: Any, caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    """A backend of ``backend``'s kind that tails a run's logs for 3 s (the tests'
    emulator config says 0.25 s), on an emulator where each of the runner's log
    batches lands a second late: every one after the final state."""
    caplog.set_level(logging.INFO, logger="lume_scheduling.server")
    emulator.server.faults.slow_down("write_run_logs", 1.0, source=EMULATOR.RUNNER)
    with type(backend)(emulator.config(log_tail_quiet=3.0)) as tailing:
        yield tailing


def tail_reads(queries: Any) -> int:
    """How many of ``queries`` read a run's logs only (the tail after its final state)."""
    return sum(1 for query in queries if "logs" in query and "serialized_state" not in query)
IMAGE = CONFTEST.IMAGE
seed_run = CONFTEST.seed_run
EMULATOR = CONFTEST.emulator_module
SECRET = "s3cr3t-token-value"
# Lazarus may submit a run again 1 s after its last submission (30 s by default).
CRASH_SETTINGS = EMULATOR.Settings.for_tests(submitted_lock_seconds=1.0)
# server: services/towel/lazarus.py, reschedule_flow_runs (the default limit of 3)
LAZARUS_GAVE_UP = "A Lazarus process attempted to reschedule this run 3 times without success. Marking as failed."


def _flow_run(emulator: Any, flow_run_id: str) -> Dict[str, Any]:
    return emulator.store.tables["flow_run"][flow_run_id]


def _wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout} s")


def _task_run_state(emulator: Any, flow_run_id: str, slug: str, column: str = "state") -> Any:
    task_ids = {t["id"] for t in emulator.store.rows("task") if t["slug"] == slug}
    for run in emulator.store.where("task_run", flow_run_id=flow_run_id):
        if run["task_id"] in task_ids and run["map_index"] == -1:
            return run[column]
    return None


def _task_run_message(emulator: Any, flow_run_id: str, slug: str) -> Any:
    return _task_run_state(emulator, flow_run_id, slug, "state_message")


@task(name="identity")
def identity(x: Any) -> Any:
    return x


NO_STORAGE_MODULE = """
from prefect import Flow, Parameter, task
from prefect.engine.results import PrefectResult

@task(name="identity")
def identity(x):
    return x

# no storage; a result, so that a Prefect Server keeps the value
with Flow("no-storage", result=PrefectResult()) as no_storage_flow:
    identity(Parameter("x", default=5))
"""


class TestConfiguration:
    def test_api_key_is_never_shown(self) -> None:
        config = PrefectServerConfig(api_key=SECRET)
        backend = DockerBackend(config)
        for text in (repr(config), str(config), config.json(), repr(backend)):
            assert SECRET not in text
        assert config.api_key_value() == SECRET

    @pytest.mark.parametrize(
        "field, value",
        [
            ("default_image", "Not/An:Image!"),
            ("api_url", "localhost:4200"),
            ("tenant_id", "not-a-uuid"),
            ("poll_interval", 0),
            ("request_retries", -1),
            ("agent_stale_after", 0),
            ("resurrection_attempt_limit", -1),
        ],
    )
    def test_bad_settings_are_refused_naming_the_field(self, field: str, value: Any) -> None:
        with pytest.raises(pydantic.ValidationError, match=field):
            PrefectServerConfig(**{field: value})

    def test_config_must_be_a_prefect_server_config(self) -> None:
        with pytest.raises(TypeError, match="PrefectServerConfig"):
            DockerBackend({"api_url": "http://x"})  # type: ignore[arg-type]


class TestRunConfigMapping:
    def test_docker_run_config_becomes_a_docker_run(self) -> None:
        config = DockerRunConfig(
            image="ghcr.io/slac/lume:2", env={"A": "1"}, labels=["gpu"], host_config={"mem_limit": "1g"}, ports=[8080]
        )
        run = to_prefect_run_config(config)
        assert isinstance(run, prefect.run_configs.DockerRun)
        assert (run.image, run.env, run.labels, run.host_config, run.ports) == (
            "ghcr.io/slac/lume:2", {"A": "1"}, {"gpu"}, {"mem_limit": "1g"}, [8080]
        )

    def test_kubernetes_quantities_are_passed_as_written(self) -> None:
        config = KubernetesRunConfig(
            cpu_limit="1500m", cpu_request=0.5, memory_limit="1.5Gi", memory_request="129e6"
        )
        run = to_prefect_run_config(config)
        assert (run.cpu_limit, run.cpu_request, run.memory_limit, run.memory_request) == (
            "1500m", "0.5", "1.5Gi", "129e6"
        )

    def test_kubernetes_without_template_gets_the_packaged_job(self) -> None:
        run = to_prefect_run_config(KubernetesRunConfig())
        template = run.job_template
        assert template == default_job_template()
        assert (template["apiVersion"], template["kind"]) == ("batch/v1", "Job")
        (container,) = template["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["prefect", "execute", "flow-run"]
        # No placeholder env values that would reach the pod verbatim.
        assert "env" not in container

    def test_kubernetes_template_path_is_read_with_the_safe_loader(self, tmp_path: Path) -> None:
        path = tmp_path / "job.yaml"
        path.write_text("apiVersion: batch/v1\nkind: Job\nmetadata: {name: custom}\n")
        run = to_prefect_run_config(KubernetesRunConfig(job_template_path=str(path)))
        assert run.job_template["metadata"] == {"name": "custom"}
        assert run.job_template_path is None
        remote = to_prefect_run_config(KubernetesRunConfig(job_template_path="s3://bucket/job.yaml"))
        assert (remote.job_template, remote.job_template_path) == (None, "s3://bucket/job.yaml")

    def test_local_run_config_is_refused(self) -> None:
        from lume_scheduling.domain import LocalRunConfig

        with pytest.raises(TypeError, match="DockerRunConfig or KubernetesRunConfig"):
            to_prefect_run_config(LocalRunConfig())


@pytest.mark.real_agent
class TestRegistration:
    def test_labels_replace_the_flows_labels_and_the_callers_flow_is_untouched(
        self, backend: Any, register: Callable[..., str], emulator: Any
    ) -> None:
        storage_before = flows.arithmetic_flow.storage
        flow_id = register(flows.arithmetic_flow, labels=["gpu", "slac"])
        registered = emulator.store.tables["flow"][flow_id]
        assert set(registered["run_config"]["labels"]) == {"gpu", "slac"}
        assert registered["run_config"]["image"] == IMAGE
        assert flows.arithmetic_flow.run_config is None
        assert flows.arithmetic_flow.storage is storage_before
        assert "arithmetic" not in (storage_before.flows or {})

    def test_image_argument_wins_over_the_default(
        self, register: Callable[..., str], emulator: Any
    ) -> None:
        flow_id = register(flows.arithmetic_flow, image="ghcr.io/slac/other:3")
        assert emulator.store.tables["flow"][flow_id]["run_config"]["image"] == "ghcr.io/slac/other:3"

    @pytest.mark.parametrize("kind", [DockerBackend, KubernetesBackend])
    def test_no_image_and_no_default_image_is_a_value_error_naming_image(self, kind: Any, emulator: Any) -> None:
        with kind(emulator.config(default_image=None)) as backend:
            backend.create_project(PROJECT)
            with pytest.raises(ValueError, match="image"):
                backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            with pytest.raises(ValueError, match="image"):
                backend.register_flow(flows.arithmetic_flow, PROJECT, image="Bad Image", no_url=True)
        assert not emulator.store.tables["flow"]

    def test_unknown_project_is_a_value_error_naming_project_name(self, backend: Any) -> None:
        with pytest.raises(ValueError, match="project_name 'nowhere'"):
            backend.register_flow(flows.arithmetic_flow, "nowhere", no_url=True)

    def test_flow_without_storage_gets_module_storage_of_its_module(
        self,
        backend: Any,
        register: Callable[..., str],
        emulator: Any,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        name = "lume_scheduling_tests_no_storage"
        # the flow runs' processes import it from the agent's import path
        (emulator.import_dir / f"{name}.py").write_text(NO_STORAGE_MODULE)
        monkeypatch.syspath_prepend(str(emulator.import_dir))
        monkeypatch.delitem(sys.modules, name, raising=False)
        module = importlib.import_module(name)
        monkeypatch.setitem(sys.modules, name, module)  # removed again after the test
        flow_id = register(module.no_storage_flow)
        storage = emulator.store.tables["flow"][flow_id]["serialized_flow"]["storage"]
        assert (storage["type"], storage["module"]) == ("Module", name)
        assert module.no_storage_flow.storage is None
        assert backend.run_and_return({"x": 7}, task_name="identity", flow_id=flow_id) == 7

    def test_flow_that_no_agent_could_load_is_refused(self, register: Callable[..., str]) -> None:
        with Flow("local-only") as local_flow:
            identity(1)
        with pytest.raises(ValueError, match="no agent could load it"):
            register(local_flow)

    def test_registration_prints_the_flow_unless_no_url(
        self, register: Callable[..., str], capsys: pytest.CaptureFixture
    ) -> None:
        flow_id = register(flows.arithmetic_flow, no_url=False)
        assert flow_id in capsys.readouterr().out
        register(flows.arithmetic_flow, no_url=True)
        assert capsys.readouterr().out == ""

    def test_load_flow_returns_the_newest_version(self, backend: Any, register: Callable[..., str]) -> None:
        register(flows.arithmetic_flow)
        newest = register(flows.arithmetic_flow)
        loaded = backend.load_flow("arithmetic", PROJECT)
        assert loaded["flow_id"] == newest
        assert isinstance(loaded["flow"], prefect.Flow)
        assert {t.name for t in loaded["flow"].tasks} >= {"add", "add_more", "multiply"}
        with pytest.raises(FlowNotFoundError):
            backend.load_flow("arithmetic", "other-project")


@pytest.mark.real_agent
class TestRunning:
    def test_project_name_env_is_merged_into_the_callers_env(
        self, backend: Any, register: Callable[..., str], emulator: Any
    ) -> None:
        flow_id = register(flows.environment_flow)
        flow_run_id = backend.run({"name": "TOKEN"}, flow_id=flow_id, env={"TOKEN": SECRET})
        env = _flow_run(emulator, flow_run_id)["run_config"]["env"]
        assert env == {"TOKEN": SECRET, "PREFECT__CONTEXT__PROJECT_NAME": PROJECT}
        assert backend.result(flow_run_id, "read_env", timeout=20) == SECRET

    def test_callers_project_name_env_wins(self, backend: Any, register: Callable[..., str], emulator: Any) -> None:
        flow_id = register(flows.arithmetic_flow)
        flow_run_id = backend.run(flow_id=flow_id, env={"PREFECT__CONTEXT__PROJECT_NAME": "mine"})
        assert _flow_run(emulator, flow_run_id)["run_config"]["env"]["PREFECT__CONTEXT__PROJECT_NAME"] == "mine"

    def test_run_without_image_uses_the_registered_image(self, docker: DockerBackend, emulator: Any) -> None:
        flow_id = docker.register_flow(flows.arithmetic_flow, PROJECT, image="ghcr.io/slac/reg:1", no_url=True)
        flow_run_id = docker.run(flow_id=flow_id)
        assert _flow_run(emulator, flow_run_id)["run_config"]["image"] == "ghcr.io/slac/reg:1"

    def test_kubernetes_runs_carry_the_packaged_job_template(self, emulator: Any) -> None:
        with KubernetesBackend(emulator.config()) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            flow_run_id = backend.run(flow_id=flow_id, memory_limit="1.5Gi")
            run_config = _flow_run(emulator, flow_run_id)["run_config"]
        assert run_config["type"] == "KubernetesRun"
        assert run_config["job_template"] == default_job_template()
        assert run_config["memory_limit"] == "1.5Gi"

    def test_env_values_and_the_api_key_never_reach_a_log_line(
        self, emulator: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        with DockerBackend(emulator.config(api_key=SECRET)) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            assert backend.run_and_return(flow_id=flow_id, task_name="add", env={"TOKEN": SECRET}) == 3
        assert caplog.records
        assert all(SECRET not in record.getMessage() for record in caplog.records)

    def test_bad_parameters_are_a_value_error_naming_them(
        self, backend: Any, register: Callable[..., str], emulator: Any
    ) -> None:
        flow_id = register(flows.arithmetic_flow)
        with pytest.raises(ValueError, match="has no parameter 'nope'"):
            backend.run({"nope": 1}, flow_id=flow_id)
        assert not emulator.store.rows("flow_run")


@pytest.mark.real_agent
class TestFollowingARun:
    def test_logs_of_the_run_go_to_our_logger_tagged_with_the_run_id(
        self, backend: Any, register: Callable[..., str], caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="lume_scheduling.server")
        flow_id = register(flows.hanging_flow)
        flow_run_id = backend.run({"seconds": 1.0}, flow_id=flow_id)
        backend.wait(flow_run_id, timeout=30)
        streamed = [r for r in caplog.records if getattr(r, "flow_run_id", None) == flow_run_id]
        # the agent's line, written while the run goes on
        assert "Submitted for execution: PID: " in " ".join(r.getMessage() for r in streamed)
        assert all(r.name == "lume_scheduling.server" for r in streamed)

    def test_log_lines_that_arrive_after_the_final_state_are_not_lost(
        self, late_batches: Any, register: Callable[..., str], caplog: pytest.LogCaptureFixture
    ) -> None:
        backend = late_batches
        flow_run_id = backend.run(flow_id=register(flows.arithmetic_flow))
        assert backend.wait(flow_run_id, timeout=30) is FlowRunState.SUCCESS
        backend.get_result(flow_run_id)
        messages = " ".join(r.getMessage() for r in caplog.records if getattr(r, "flow_run_id", None) == flow_run_id)
        assert "Task 'add': Finished task run" in messages

    def test_every_line_a_flow_logged_arrives_in_order_after_the_final_state(
        self, late_batches: Any, register: Callable[..., str], caplog: pytest.LogCaptureFixture
    ) -> None:
        backend = late_batches
        assert backend.run_and_return({"lines": 40}, task_name="chatter", flow_id=register(flows.chatty_flow)) == 40
        lines = [
            r.getMessage().split("] ", 1)[1]
            for r in caplog.records
            if r.name == "lume_scheduling.server" and getattr(r, "flow_log", False)
        ]
        chatter = [line for line in lines if "chatter line" in line]
        assert chatter == [f"chatter line {n:03d} of 40" for n in range(40)], chatter
        # The flow runner's closing line, in the last batch, arrived too.
        assert any(line.startswith("Flow run SUCCESS") for line in lines), lines

    def test_the_tail_stops_soon_after_the_flow_runners_closing_line(
        self, make_emulator: Callable[..., Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        # With a long quiet period, only the closing-line rule ends the tail
        # early: a second later instead of log_tail_quiet (60 s) later.
        emulated = make_emulator()
        with DockerBackend(emulated.config(log_tail_quiet=60.0, log_tail_max=120.0)) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            start = emulated.server.request_count
            assert backend.run_and_return(flow_id=flow_id, task_name="add") == 3
            tail = tail_reads(emulated.server.queries[start:])
        # One read of the tail, after the 0.5 s settle: not the 4 reads (one per
        # 15 s) that a 60 s quiet period makes.
        assert tail == 1

    def test_no_tail_with_log_tail_quiet_0_nor_for_a_run_that_had_ended_before_it_was_seen(
        self, make_emulator: Callable[..., Any]
    ) -> None:
        emulated = make_emulator()
        with DockerBackend(emulated.config(log_tail_quiet=0)) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            flow_run_id = backend.run(flow_id=flow_id)
            start = emulated.server.request_count
            assert backend.wait(flow_run_id, timeout=60) is FlowRunState.SUCCESS
            assert tail_reads(emulated.server.queries[start:]) == 0
        with DockerBackend(emulated.config()) as another:
            start = emulated.server.request_count
            assert another.wait(flow_run_id, timeout=60) is FlowRunState.SUCCESS
            # no read of the logs only: the run had ended before this backend first saw it
            queries = emulated.server.queries[start:]
            assert queries and tail_reads(queries) == 0, queries
        with DockerBackend(emulated.config(log_tail_quiet=0.3)) as third:
            # the same rule makes a created run's tail happen: the test is not vacuous
            flow_run_id = third.run(flow_id=flow_id)
            start = emulated.server.request_count
            assert third.wait(flow_run_id, timeout=60) is FlowRunState.SUCCESS
            assert tail_reads(emulated.server.queries[start:]) >= 1

    def test_one_query_reads_every_task_run_and_final_states_are_not_asked_again(
        self, backend: Any, register: Callable[..., str], emulator: Any
    ) -> None:
        flow_id = register(flows.arithmetic_flow)
        backend.run_and_return(flow_id=flow_id)  # flow details are now known
        start = emulator.server.request_count
        assert backend.run_and_return({"x": 2, "y": 5}, flow_id=flow_id) == {
            "add-1": 7, "add_more-1": 17, "multiply-1": 10, "x": 2, "y": 5
        }
        asked = emulator.server.requests[start:]
        assert asked[0] == ["create_flow_run"]
        assert all(names == ["flow_run_by_pk"] for names in asked[1:])
        # Task runs came once, in the state query that saw the end (5 = 3 tasks and
        # 2 parameters); neither the reads of the logs after it, nor the second
        # wait, nor the result asked again.
        returned = emulator.server.task_runs_returned[start:]
        queries = emulator.server.queries[start:]
        tail = tail_reads(queries)
        assert tail >= 1 and tail_reads(queries[-tail:]) == tail
        assert returned == [0] * (len(returned) - 1 - tail) + [5] + [0] * tail

    def test_mapped_children_keep_their_own_values(self, backend: Any, register: Callable[..., str]) -> None:
        flow_run_id = backend.run({"values": [2, 3, 4]}, flow_id=register(flows.mapped_flow))
        record = backend.get_result(flow_run_id, timeout=20)
        assert [record.mapped_value("square-1", i) for i in range(3)] == [4, 9, 16]
        assert record.values["square-1"] == [4, 9, 16]

    def test_more_than_a_thousand_task_runs(self, docker: DockerBackend, emulator: Any) -> None:
        backend = docker
        flow_id = docker.register_flow(flows.mapped_flow, PROJECT, no_url=True)
        count = 1500
        children = [
            ("square-1", "square", i, prefect_state.Success(result=PrefectResult().write(i * i))) for i in range(count)
        ]
        flow_run_id = seed_run(
            emulator,
            flow_id,
            prefect_state.Success("All reference tasks succeeded."),
            [("square-1", "square", -1, prefect_state.Mapped("Mapped")), *children],
        )
        start = emulator.server.request_count
        assert backend.result(flow_run_id, "square") == [i * i for i in range(count)]
        asked = emulator.server.requests[start:]
        # the state query brings the ended run with its first 1000 task runs, then one more
        # page (the children, the mapped parent and the parameter's task run)
        assert asked == [["flow_run_by_pk"], ["task_run"]]
        assert emulator.server.task_runs_returned[start:] == [1000, count + 2 - 1000]

    def test_only_the_selected_tasks_results_are_read(
        self, backend: Any, register: Callable[..., str], emulator: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
    ) -> None:
        flow_id = register(flows.arithmetic_flow)
        unreadable = LocalResult(dir=str(tmp_path)).copy()
        unreadable.location = "missing.prefect"
        flow_run_id = seed_run(
            emulator,
            flow_id,
            prefect_state.Success("ok"),
            [
                ("add-1", "add", -1, prefect_state.Success(result=PrefectResult().write(3))),
                ("multiply-1", "multiply", -1, prefect_state.Success(result=unreadable)),
            ],
        )
        caplog.set_level(logging.WARNING, logger="lume_scheduling.server")
        assert backend.result(flow_run_id, "add") == 3
        assert "cannot be read" not in caplog.text
        with pytest.raises(EmptyResultError):
            backend.result(flow_run_id, "multiply")
        assert "multiply-1 cannot be read" in caplog.text

    def test_a_flow_that_keeps_no_values_gives_empty_results(self, docker: DockerBackend) -> None:
        flow_id = docker.register_flow(flows.unkept_flow, PROJECT, no_url=True)
        with pytest.raises(EmptyResultError):
            docker.run_and_return(flow_id=flow_id, task_name="add")
        assert docker.run_and_return(flow_id=flow_id)["add-1"] is None

    def test_unknown_task_lists_the_tasks(self, backend: Any, register: Callable[..., str]) -> None:
        with pytest.raises(TaskNotInFlowError, match="add_more"):
            backend.run_and_return(flow_id=register(flows.arithmetic_flow), task_name="ad")

    def test_a_warning_when_no_agent_has_the_runs_labels(
        self, emulator: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="lume_scheduling.server")
        with DockerBackend(emulator.config(agent_check_after=0.05)) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
            with pytest.raises(FlowRunTimeoutError) as raised:
                backend.run_and_return(flow_id=flow_id, labels=["nobody-has-this"], timeout=0.3)
        assert raised.value.cancelled is True
        assert "no agent that would be handed it has polled the server" in caplog.text
        assert "the run's labels are ['nobody-has-this']" in caplog.text


@pytest.mark.real_agent
class TestFinalStates:
    @pytest.mark.parametrize(
        "state, expected",
        [
            (prefect_state.Scheduled(), FlowRunState.SCHEDULED),
            (prefect_state.Submitted(), FlowRunState.SCHEDULED),
            (prefect_state.Running(), FlowRunState.RUNNING),
            (prefect_state.Cancelling(), FlowRunState.RUNNING),
            (prefect_state.Success(), FlowRunState.SUCCESS),
            (prefect_state.Failed("Some reference tasks failed."), FlowRunState.FAILED),
            (prefect_state.Cancelled(), FlowRunState.CANCELLED),
            (prefect_state.TimedOut(), FlowRunState.TIMED_OUT),
            # the messages the server and prefect's agents write when a run's process died
            (prefect_state.Failed(LAZARUS_GAVE_UP), FlowRunState.CRASHED),
            (prefect_state.Failed("No heartbeat detected from the flow run; marking the run as failed."),
             FlowRunState.CRASHED),
            (prefect_state.Failed("Kubernetes Error: pods ['prefect-job-1'] failed for this job"), FlowRunState.CRASHED),
            # Lazarus' own Scheduled state is still scheduled
            (prefect_state.Scheduled("Rescheduled by a Lazarus process."), FlowRunState.SCHEDULED),
            # a flow's own failure that merely quotes such words is no crash
            (prefect_state.Failed("task said: no heartbeat detected from the flow run"), FlowRunState.FAILED),
        ],
    )
    def test_prefect_states_map_to_domain_states(self, state: Any, expected: FlowRunState) -> None:
        assert flow_run_state(state) is expected

    def test_a_failed_run_whose_task_run_the_zombie_killer_failed_crashed(self) -> None:
        failed = prefect_state.Failed("Some reference tasks failed.")
        lost = "No heartbeat detected from the remote task; marking the task run 1 (hang) as failed."
        assert flow_run_state(failed, lost_task=lost) is FlowRunState.CRASHED
        assert flow_run_state(prefect_state.Success(), lost_task=lost) is FlowRunState.SUCCESS

    def test_a_failing_flow_reports_its_task_and_exception(self, backend: Any, register: Callable[..., str]) -> None:
        with pytest.raises(FlowFailedError) as raised:
            backend.run_and_return(flow_id=register(flows.failing_flow))
        error = raised.value
        assert (error.state, error.exception_type) == ("failed", "ValueError")
        assert "kaboom" in error.exception_message and "explode-1" in error.exception_message

    def test_a_cancelled_run_is_cancelled_not_failed(self, backend: Any, register: Callable[..., str]) -> None:
        flow_run_id = backend.run({"seconds": 30.0}, flow_id=register(flows.hanging_flow))
        assert backend.cancel(flow_run_id) is True
        assert backend.get_state(flow_run_id) is FlowRunState.CANCELLED
        with pytest.raises(FlowRunCancelledError):
            backend.result(flow_run_id)

    @pytest.mark.parametrize("kind", [DockerBackend, KubernetesBackend])
    def test_a_crashed_run_is_told_apart(
        self, kind: Any, make_emulator: Callable[..., Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="lume_scheduling.server")
        emulated = make_emulator(settings=CRASH_SETTINGS)
        with kind(emulated.config()) as backend:
            backend.create_project(PROJECT)
            flow_run_id = backend.run({"seconds": 30.0}, flow_id=backend.register_flow(flows.hanging_flow, PROJECT, no_url=True))
            _wait_for(lambda: _task_run_state(emulated, flow_run_id, "hang-1") == "Running", what="the task running")
            # the zombie killer fails the task run, Lazarus reschedules the flow run, an
            # agent runs it again and the rerun ends Failed ("Some reference tasks failed.")
            emulated.crash_flow_run(flow_run_id)
            assert backend.wait(flow_run_id, timeout=60) is FlowRunState.CRASHED
            with pytest.raises(FlowFailedError, match="crashed") as raised:
                backend.result(flow_run_id)
        assert _flow_run(emulated, flow_run_id)["state_message"] == "Some reference tasks failed."
        message = raised.value.exception_message
        assert message.startswith("the run's process stopped: No heartbeat detected from the remote task; marking the task run ")
        assert message.endswith("the server rescheduled it 1 time and it ended 'Some reference tasks failed.'")
        told = [r.getMessage() for r in caplog.records if "rescheduled the run" in r.getMessage()]
        assert told == [f"flow run {flow_run_id}: the server rescheduled the run after its run process stopped "
                        f"(attempt 1 of 3): " + _task_run_message(emulated, flow_run_id, "hang-1")]

    def test_when_lazarus_gives_up_the_run_crashed_with_the_servers_message(
        self, make_emulator: Callable[..., Any]
    ) -> None:
        # a limit of 0: Lazarus fails the run the first time it finds it dead
        emulated = make_emulator(settings=CRASH_SETTINGS.replace(resurrection_attempt_limit=0))
        with DockerBackend(emulated.config()) as backend:
            backend.create_project(PROJECT)
            flow_run_id = backend.run({"seconds": 30.0}, flow_id=backend.register_flow(flows.hanging_flow, PROJECT, no_url=True))
            _wait_for(lambda: emulated.agent.running(flow_run_id), what="the run's process")
            emulated.server.settings = emulated.server.settings.replace(
                zombie_killer_loop_seconds=0.2, zombie_heartbeat_cutoff_seconds=2.0,
                lazarus_loop_seconds=0.2, lazarus_heartbeat_cutoff_seconds=2.0,
            )
            emulated.agent.kill_flow_run(flow_run_id)
            assert backend.wait(flow_run_id, timeout=60) is FlowRunState.CRASHED
            record = backend.get_result(flow_run_id)
        gave_up = "A Lazarus process attempted to reschedule this run 0 times without success. Marking as failed."
        assert (record.state, record.message, record.exception_type) == (FlowRunState.CRASHED, gave_up, None)
        assert _flow_run(emulated, flow_run_id)["times_resurrected"] == 0

    def test_a_rescheduled_run_is_said_so_once_per_attempt(
        self, docker: DockerBackend, emulator: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="lume_scheduling.server")
        flow_run_id = seed_run(emulator, docker.register_flow(flows.hanging_flow, PROJECT, no_url=True), prefect_state.Running())
        rules, store = emulator.server.rules, emulator.store

        def lazarus(times: int) -> None:  # as services/towel/lazarus.py writes it
            rules.set_flow_run_state(flow_run_id, prefect_state.Scheduled(message="Rescheduled by a Lazarus process."))
            store.update("flow_run", flow_run_id, times_resurrected=times)

        def told() -> List[str]:
            return [r.getMessage() for r in caplog.records if "rescheduled" in r.getMessage()]

        assert docker.get_state(flow_run_id) is FlowRunState.RUNNING and told() == []
        lazarus(1)
        assert docker.get_state(flow_run_id) is FlowRunState.SCHEDULED
        rules.set_flow_run_state(flow_run_id, prefect_state.Submitted())
        assert docker.get_state(flow_run_id) is FlowRunState.SCHEDULED
        rules.set_flow_run_state(flow_run_id, prefect_state.Running())
        with pytest.raises(FlowRunTimeoutError):
            docker.result(flow_run_id, timeout=0.2)
        lazarus(2)
        with pytest.raises(FlowRunTimeoutError):
            docker.wait(flow_run_id, timeout=0.2)
        assert told() == [
            f"flow run {flow_run_id}: the server rescheduled the run after its run process stopped (attempt 1 of 3)",
            f"flow run {flow_run_id}: the server rescheduled the run after its run process stopped (attempt 2 of 3)",
        ]

    def test_a_timed_out_run(self, backend: Any, register: Callable[..., str], emulator: Any) -> None:
        flow_run_id = seed_run(emulator, register(flows.arithmetic_flow), prefect_state.TimedOut("too slow"))
        assert backend.get_state(flow_run_id) is FlowRunState.TIMED_OUT
        with pytest.raises(FlowRunTimeoutError):
            backend.result(flow_run_id)


@pytest.mark.real_agent
class TestTimeoutAndCancel:
    def test_time_out_cancels_and_stops_the_run_on_the_agent(
        self, backend: Any, register: Callable[..., str], emulator: Any
    ) -> None:
        flow_id = register(flows.hanging_flow)
        with pytest.raises(FlowRunTimeoutError) as raised:
            backend.run_and_return({"seconds": 60.0}, flow_id=flow_id, timeout=timedelta(seconds=0.5))
        error = raised.value
        assert error.cancelled is True
        assert backend.get_state(error.flow_run_id) is FlowRunState.CANCELLED
        # nothing killed it: prefect's runner saw the cancel and ended on its own
        _wait_for(lambda: not emulator.agent.running(error.flow_run_id), what="the flow run's process ending")

    def test_time_out_without_cancel_leaves_the_run_going(
        self, backend: Any, register: Callable[..., str], emulator: Any
    ) -> None:
        flow_id = register(flows.hanging_flow)
        with pytest.raises(FlowRunTimeoutError) as raised:
            backend.run_and_return({"seconds": 60.0}, flow_id=flow_id, timeout=0.3, cancel_on_timeout=False)
        assert raised.value.cancelled is False
        assert not backend.get_state(raised.value.flow_run_id).is_final
        assert backend.cancel(raised.value.flow_run_id) is True

    def test_a_cancel_replaced_by_a_late_submission_is_sent_again(self, backend: Any, register: Callable[..., str], emulator: Any) -> None:
        # Prefect Server keeps no version lock: an agent that took the run just before the
        # cancel writes Submitted just after it, and Cancelled is gone
        flow_run_id = backend.run(flow_id=register(flows.hanging_flow), labels=["no-agent-has-this"])
        rules = emulator.server.rules
        cancel = rules.cancel_flow_run
        cancels = []

        def cancel_then_submitted(run_id: str, state_message: Any = None) -> Any:
            answer = cancel(run_id, state_message)
            if not cancels:
                rules.set_flow_run_state(run_id, prefect_state.Submitted("Submitted for execution"))
            cancels.append(answer["state"])
            return answer

        rules.cancel_flow_run = cancel_then_submitted
        try:
            assert backend.cancel(flow_run_id) is True
        finally:
            rules.cancel_flow_run = cancel
        assert cancels == ["Cancelled", "Cancelled"]
        assert _flow_run(emulator, flow_run_id)["state"] == "Cancelled"
        assert backend.get_state(flow_run_id) is FlowRunState.CANCELLED

    def test_the_seed_default_time_out_is_one_minute(self) -> None:
        import inspect

        default = inspect.signature(DockerBackend.run_and_return).parameters["timeout"].default
        assert default == timedelta(minutes=1)


@pytest.mark.real_agent
class TestServerFaults:
    @pytest.mark.parametrize("kind", [DockerBackend, KubernetesBackend])
    def test_server_disappearing_mid_run(self, kind: Any, make_emulator: Callable[..., Any]) -> None:
        emulated = make_emulator(agent=False)
        with kind(emulated.config()) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(flows.hanging_flow, PROJECT, no_url=True)
            flow_run_id = backend.run({"seconds": 30.0}, flow_id=flow_id)
            emulated.server.stop()
            with pytest.raises(BackendUnavailableError, match="cannot connect"):
                backend.wait(flow_run_id, timeout=5)

    def test_http_500_answers(self, backend: Any, register: Callable[..., str], emulator: Any) -> None:
        flow_id = register(flows.arithmetic_flow)
        emulator.server.fail_next(5, status=500, body="database is down")
        with pytest.raises(BackendUnavailableError, match="HTTP 500.*database is down"):
            backend.run(flow_id=flow_id)

    def test_one_http_503_is_retried(self, backend: Any, register: Callable[..., str], emulator: Any) -> None:
        flow_id = register(flows.arithmetic_flow)
        emulator.server.fail_next(1, status=503)
        assert backend.run_and_return(flow_id=flow_id, task_name="add") == 3

    def test_a_slow_server(self, emulator: Any) -> None:
        with DockerBackend(emulator.config(request_timeout=0.2, request_retries=0)) as backend:
            emulator.server.delay = 0.5
            with pytest.raises(BackendUnavailableError, match="no answer within 0.2 s"):
                backend.create_project(PROJECT)
            emulator.server.delay = 0.0

    def test_graphql_errors_carry_the_servers_message(self, backend: Any, emulator: Any) -> None:
        emulator.server.graphql_error_next("permission denied for table flow_run")
        with pytest.raises(BackendUnavailableError, match="permission denied for table flow_run"):
            backend.get_state("00000000-0000-0000-0000-000000000000")

    @pytest.mark.parametrize("url", ["http://127.0.0.1:9/graphql", "http://no-such-host.invalid/graphql"])
    def test_unreachable_servers(self, url: str) -> None:
        config = PrefectServerConfig(api_url=url, request_retries=0, request_timeout=2)
        with DockerBackend(config) as backend:
            with pytest.raises(BackendUnavailableError, match="cannot connect"):
                backend.create_project(PROJECT)

    def test_unknown_ids(self, backend: Any) -> None:
        with pytest.raises(FlowNotFoundError):
            backend.run(flow_id="3f2c8a8e-0000-4000-8000-000000000000")
        with pytest.raises(FlowNotFoundError):
            backend.run(flow_id="not-a-uuid")
        with pytest.raises(FlowRunNotFoundError):
            backend.get_state("not-a-uuid")


@pytest.mark.real_agent
class TestNoGlobalState:
    def test_two_backends_on_two_servers_side_by_side_from_several_threads(
        self, make_emulator: Callable[..., Any]
    ) -> None:
        config_before = prefect.config.to_dict()
        context_before = prefect.context.to_dict()
        first, second = make_emulator(), make_emulator()
        backends = [DockerBackend(first.config()), KubernetesBackend(second.config())]
        flow_ids = []
        for backend in backends:
            backend.create_project(PROJECT)
            flow_ids.append(backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True))
        results: Dict[Any, Any] = {}
        errors = []

        def work(index: int, x: int) -> None:
            try:
                results[(index, x)] = backends[index].run_and_return(
                    {"x": x, "y": 1}, task_name="add", flow_id=flow_ids[index]
                )
            except Exception as err:  # reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(i % 2, i)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        assert results == {(i % 2, i): i + 1 for i in range(6)}
        assert len(first.store.tables["flow_run"]) == 3 and len(second.store.tables["flow_run"]) == 3
        assert set(first.store.tables["flow"]) == {flow_ids[0]}
        assert prefect.config.to_dict() == config_before
        assert prefect.context.to_dict() == context_before

    def test_nothing_is_written_under_home(self, emulator: Any, tmp_path: Path) -> None:
        home = tmp_path / "home"
        home.mkdir()
        script = textwrap.dedent(
            f"""
            import json
            from lume_scheduling.adapters.server import DockerBackend, PrefectServerConfig
            from lume_scheduling.adapters.testing import flows
            config = PrefectServerConfig(api_url={emulator.url!r}, default_image={IMAGE!r},
                                         poll_interval=0.02, poll_max_interval=0.1, api_key="k")
            with DockerBackend(config) as backend:
                backend.create_project("home-test")
                flow_id = backend.register_flow(flows.arithmetic_flow, "home-test", no_url=True)
                print(json.dumps(backend.run_and_return(flow_id=flow_id, task_name="add")))
            """
        )
        env = {**os.environ, "HOME": str(home), "USERPROFILE": str(home)}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == 3
        assert list(home.iterdir()) == []
