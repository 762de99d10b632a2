"""InMemoryBackend's own promises: scripting, ids, versions, call recording,
per-instance state, and behaving as either kind of backend."""

from __future__ import annotations

import threading
import time
from typing import Callable, List, Optional

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect import Flow, task

from lume_scheduling.adapters.in_memory import Call, InMemoryBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import (
    BackendUnavailableError,
    DockerRunConfig,
    EmptyResultError,
    FlowFailedError,
    FlowRunCancelledError,
    FlowRunNotFoundError,
    FlowRunState,
    FlowRunTimeoutError,
    LocalBackendError,
    RunConfig,
)


class TestConstruction:
    def test_defaults(self) -> None:
        backend = InMemoryBackend()
        assert backend.capabilities.names() == ["cancel", "server", "timeout"]
        assert backend.run_config_type is RunConfig
        assert "server=True" in repr(backend)

    def test_without_server(self, local_backend: InMemoryBackend) -> None:
        assert local_backend.capabilities.names() == ["cancel", "timeout"]

    def test_run_config_type_must_be_a_run_config(self) -> None:
        with pytest.raises(TypeError, match="run_config_type"):
            InMemoryBackend(run_config_type=dict)  # type: ignore[arg-type]

    def test_id_factory_must_be_callable(self) -> None:
        with pytest.raises(TypeError, match="id_factory"):
            InMemoryBackend(id_factory="id-1")  # type: ignore[arg-type]

    def test_run_config_type_is_per_instance(self) -> None:
        docker = InMemoryBackend(server=False, run_config_type=DockerRunConfig)
        plain = InMemoryBackend(server=False)
        with pytest.raises(pydantic.ValidationError, match="image"):
            docker.run({}, flow=flows.arithmetic_flow)
        assert docker.run({}, flow=flows.arithmetic_flow, image="lume/model:1") is None
        assert type(docker.submitted[0].run_config) is DockerRunConfig
        assert plain.run({}, flow=flows.arithmetic_flow) is None
        assert type(plain.submitted[0].run_config) is RunConfig


class TestIds:
    def test_ids_come_from_the_id_factory(self, backend: InMemoryBackend) -> None:
        backend.create_project("lume")
        flow_id = backend.register_flow(flows.arithmetic_flow, "lume")
        first = backend.submit({}, flow_id=flow_id)
        second = backend.submit({}, flow_id=flow_id)
        assert (flow_id, first, second) == ("id-1", "id-2", "id-3")
        assert backend.flow_run_ids == ["id-2", "id-3"]
        assert backend.get_result(first).flow_id == "id-1"

    def test_default_ids_are_unique_uuids(self) -> None:
        backend = InMemoryBackend(server=False)
        ids = {backend.submit({}, flow=flows.empty_flow) for _ in range(3)}
        assert len(ids) == 3
        assert all(len(flow_run_id) == 36 for flow_run_id in ids)

    def test_a_repeated_id_is_refused(self) -> None:
        backend = InMemoryBackend(server=False, id_factory=lambda: "same")
        backend.submit({}, flow=flows.empty_flow)
        with pytest.raises(ValueError, match="id_factory returned 'same' twice"):
            backend.submit({}, flow=flows.empty_flow)
        assert backend.flow_run_ids == ["same"]


class TestFlowRegistry:
    def test_registering_again_makes_numbered_versions(self, backend: InMemoryBackend) -> None:
        backend.create_project("lume")
        first = backend.register_flow(flows.twin_flow, "lume")
        second = backend.register_flow(flows.twin_flow, "lume", labels=["b"])
        versions = backend.flow_versions("twin", "lume")
        assert [(v.flow_id, v.version) for v in versions] == [(first, 1), (second, 2)]
        assert versions[1].options["labels"] == ["b"]
        assert backend.load_flow("twin", "lume")["flow_id"] == second
        # an older version still runs
        assert backend.run_and_return({}, task_name="double-1", flow_id=first) == 6

    def test_idempotency_key_compares_with_the_last_registration(
        self, backend: InMemoryBackend
    ) -> None:
        backend.create_project("lume")
        first = backend.register_flow(flows.twin_flow, "lume", idempotency_key="a")
        assert backend.register_flow(flows.twin_flow, "lume", idempotency_key="a") == first
        second = backend.register_flow(flows.twin_flow, "lume", idempotency_key="b")
        # "a" is no longer the last key: a new version
        third = backend.register_flow(flows.twin_flow, "lume", idempotency_key="a")
        assert len({first, second, third}) == 3
        assert len(backend.flow_versions("twin", "lume")) == 3

    def test_flows_are_per_project(self, backend: InMemoryBackend) -> None:
        backend.create_project("one")
        backend.create_project("two")
        in_one = backend.register_flow(flows.twin_flow, "one")
        in_two = backend.register_flow(flows.twin_flow, "two")
        assert backend.load_flow("twin", "one")["flow_id"] == in_one
        assert backend.load_flow("twin", "two")["flow_id"] == in_two
        assert backend.projects == ["one", "two"]

    def test_registering_into_an_unknown_project_is_refused(self, backend: InMemoryBackend) -> None:
        with pytest.raises(ValueError, match="project_name 'nowhere'.*create_project"):
            backend.register_flow(flows.twin_flow, "nowhere")

    def test_only_prefect_flows_register(self, backend: InMemoryBackend) -> None:
        backend.create_project("lume")
        with pytest.raises(TypeError, match="Prefect 1 Flow"):
            backend.register_flow(lambda: None, "lume")

    def test_empty_names_are_refused(self, backend: InMemoryBackend) -> None:
        with pytest.raises(ValueError, match="project_name"):
            backend.create_project(" ")
        with pytest.raises(ValueError, match="flow_name"):
            backend.load_flow("", "lume")


class TestRunTargets:
    def test_server_mode_also_runs_a_flow_object(self, backend: InMemoryBackend) -> None:
        flow_run_id = backend.run({"x": 5, "y": 7}, flow=flows.arithmetic_flow)
        record = backend.get_result(flow_run_id)
        assert record.flow_id is None
        assert record.flow_name == "arithmetic"
        assert record.select("add") == 12

    def test_registered_runs_know_their_flow_and_project(self, backend: InMemoryBackend) -> None:
        backend.create_project("lume")
        flow_id = backend.register_flow(flows.arithmetic_flow, "lume")
        record = backend.get_result(backend.run({}, flow_id=flow_id))
        assert (record.flow_id, record.project_name) == (flow_id, "lume")

    def test_a_flow_must_be_a_prefect_flow(
        self, backend: InMemoryBackend, local_backend: InMemoryBackend
    ) -> None:
        for fake in (backend, local_backend):
            with pytest.raises(TypeError, match="Prefect 1 Flow"):
                fake.run({}, flow="arithmetic")

    def test_local_mode_waits_and_raises_for_failure(self, local_backend: InMemoryBackend) -> None:
        assert local_backend.run({}, flow=flows.arithmetic_flow) is None
        assert local_backend.get_state(local_backend.flow_run_ids[0]) is FlowRunState.SUCCESS
        with pytest.raises(FlowFailedError, match="kaboom"):
            local_backend.run({}, flow=flows.failing_flow)
        with pytest.raises(LocalBackendError, match="create_project"):
            local_backend.create_project("lume")

    def test_submit_returns_with_the_run_ended(self, local_backend: InMemoryBackend) -> None:
        flow_run_id = local_backend.submit({"x": 2}, flow=flows.twin_flow)
        assert local_backend.get_state(flow_run_id) is FlowRunState.SUCCESS


class TestScripting:
    def test_script_failure(self, local_backend: InMemoryBackend) -> None:
        local_backend.script_failure("arithmetic", "the model diverged")
        with pytest.raises(FlowFailedError) as raised:
            local_backend.run_and_return({}, task_name="add", flow=flows.arithmetic_flow)
        assert raised.value.exception_message == "the model diverged"
        assert raised.value.exception_type == "RuntimeError"
        assert raised.value.flow_name == "arithmetic"
        assert raised.value.flow_run_id == local_backend.flow_run_ids[-1]
        # other flows are not affected
        assert local_backend.run_and_return({}, task_name="double-1", flow=flows.twin_flow) == 6

    def test_script_failure_with_an_exception_type(self, backend: InMemoryBackend) -> None:
        backend.script_failure("twin", "no memory", exception_type="MemoryError")
        flow_run_id = backend.submit({}, flow=flows.twin_flow)
        assert backend.get_state(flow_run_id) is FlowRunState.FAILED
        with pytest.raises(FlowFailedError, match="MemoryError: no memory"):
            backend.result(flow_run_id)

    def test_script_hang_until_cancelled(self, backend: InMemoryBackend) -> None:
        backend.script_hang("arithmetic")
        flow_run_id = backend.submit({}, flow=flows.arithmetic_flow)
        assert backend.get_state(flow_run_id) is FlowRunState.RUNNING
        started = time.monotonic()
        with pytest.raises(FlowRunTimeoutError):
            backend.wait(flow_run_id, timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 2
        assert backend.cancel(flow_run_id) is True
        assert backend.get_state(flow_run_id) is FlowRunState.CANCELLED
        with pytest.raises(FlowRunCancelledError):
            backend.result(flow_run_id)

    def test_cancel_wakes_a_waiting_thread(self, backend: InMemoryBackend) -> None:
        backend.script_hang("arithmetic")
        flow_run_id = backend.submit({}, flow=flows.arithmetic_flow)
        states: List[FlowRunState] = []
        waiter = threading.Thread(
            target=lambda: states.append(backend.wait(flow_run_id, timeout=30))
        )
        waiter.start()
        time.sleep(0.05)
        started = time.monotonic()
        backend.cancel(flow_run_id)
        waiter.join(5)
        assert not waiter.is_alive()
        assert time.monotonic() - started < 2
        assert states == [FlowRunState.CANCELLED]

    def test_close_cancels_hanging_runs(self) -> None:
        backend = InMemoryBackend(server=False)
        backend.script_hang("hanging")
        flow_run_id = backend.submit({}, flow=flows.hanging_flow)
        ended: List[FlowRunState] = []
        waiting = threading.Event()
        hook = backend._wait

        def entered(*args: object) -> FlowRunState:
            waiting.set()  # past the port's checks: a close now must wake it
            return hook(*args)  # type: ignore[arg-type]

        backend._wait = entered  # type: ignore[method-assign]
        waiter = threading.Thread(target=lambda: ended.append(backend.wait(flow_run_id, timeout=30)))
        waiter.start()
        assert waiting.wait(10)
        backend.close()
        backend.close()  # idempotent
        waiter.join(10)
        # The wait in progress was woken by the cancel; later calls are refused.
        assert ended == [FlowRunState.CANCELLED]
        with pytest.raises(BackendUnavailableError, match="closed"):
            backend.get_state(flow_run_id)
        assert backend.operations == ["submit", "wait", "close", "close", "get_state"]

    def test_script_empty_result(self, local_backend: InMemoryBackend) -> None:
        local_backend.script_empty_result("arithmetic")
        flow_run_id = local_backend.submit({}, flow=flows.arithmetic_flow)
        record = local_backend.get_result(flow_run_id)
        assert record.state is FlowRunState.SUCCESS
        assert record.values and all(value is None for value in record.values.values())
        with pytest.raises(EmptyResultError) as raised:
            local_backend.result(flow_run_id, "add")
        assert raised.value.task_slug == "add-1"

    def test_script_unavailable(self, backend: InMemoryBackend) -> None:
        backend.create_project("lume")
        flow_id = backend.register_flow(flows.arithmetic_flow, "lume")
        flow_run_id = backend.submit({}, flow_id=flow_id)
        backend.script_unavailable(True)
        for call in (
            lambda: backend.create_project("lume"),
            lambda: backend.register_flow(flows.arithmetic_flow, "lume"),
            lambda: backend.load_flow("arithmetic", "lume"),
            lambda: backend.submit({}, flow_id=flow_id),
            lambda: backend.run({}, flow_id=flow_id),
            lambda: backend.run_and_return({}, flow_id=flow_id),
            lambda: backend.get_state(flow_run_id),
            lambda: backend.wait(flow_run_id),
            lambda: backend.get_result(flow_run_id),
            lambda: backend.result(flow_run_id),
            lambda: backend.cancel(flow_run_id),
        ):
            with pytest.raises(BackendUnavailableError, match="unavailable"):
                call()
        # argument checks come first, as on a real client
        with pytest.raises(pydantic.ValidationError):
            backend.submit({}, flow_id=flow_id, labels=[""])
        backend.script_unavailable(False)
        assert backend.result(flow_run_id, "add") == 3
        assert len(backend.flow_run_ids) == 1

    def test_clear_scripts(self, local_backend: InMemoryBackend) -> None:
        local_backend.script_failure("arithmetic", "no")
        local_backend.script_unavailable()
        local_backend.clear_scripts()
        assert local_backend.run_and_return({}, task_name="add", flow=flows.arithmetic_flow) == 3

    def test_a_later_script_replaces_an_earlier_one(self, local_backend: InMemoryBackend) -> None:
        local_backend.script_hang("arithmetic")
        local_backend.script_failure("arithmetic", "instead")
        with pytest.raises(FlowFailedError, match="instead"):
            local_backend.run({}, flow=flows.arithmetic_flow)

    def test_scripts_need_a_flow_name(self, local_backend: InMemoryBackend) -> None:
        with pytest.raises(ValueError, match="flow_name"):
            local_backend.script_hang("")


class TestCancelDuringASynchronousRun:
    def test_cancel_wins_over_the_result_that_arrives_later(
        self, local_backend: InMemoryBackend
    ) -> None:
        started, release = threading.Event(), threading.Event()

        @task(name="held")
        def held() -> str:
            started.set()
            release.wait(10)
            return "done"

        with Flow("held") as held_flow:
            held()

        ids: List[str] = []
        runner = threading.Thread(
            target=lambda: ids.append(local_backend.submit({}, flow=held_flow))
        )
        runner.start()
        assert started.wait(10)
        (flow_run_id,) = local_backend.flow_run_ids
        assert local_backend.get_state(flow_run_id) is FlowRunState.RUNNING
        assert local_backend.cancel(flow_run_id) is True
        release.set()
        runner.join(10)
        assert ids == [flow_run_id]
        assert local_backend.get_state(flow_run_id) is FlowRunState.CANCELLED
        with pytest.raises(FlowRunCancelledError):
            local_backend.result(flow_run_id)


class TestCallRecording:
    def test_keyword_arguments_are_recorded_by_name(self, local_backend: InMemoryBackend) -> None:
        local_backend.run({"x": 1}, flow=flows.arithmetic_flow, labels=["a"], env={"K": "v"})
        assert local_backend.calls == [
            Call(
                "run",
                {
                    "parameters": {"x": 1},
                    "flow": flows.arithmetic_flow,
                    "labels": ["a"],
                    "env": {"K": "v"},
                },
            )
        ]

    def test_failed_calls_are_recorded_too(self, local_backend: InMemoryBackend) -> None:
        with pytest.raises(LocalBackendError):
            local_backend.load_flow("arithmetic", "lume")
        assert local_backend.operations == ["load_flow"]

    def test_a_call_with_wrong_arguments_is_recorded_as_given(
        self, local_backend: InMemoryBackend
    ) -> None:
        with pytest.raises(TypeError):
            local_backend.get_state()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            local_backend.get_state("a", "b")  # type: ignore[call-arg]
        assert local_backend.calls == [
            Call("get_state", {}),
            Call("get_state", {"arg0": "a", "arg1": "b"}),
        ]

    def test_clear_calls(self, local_backend: InMemoryBackend) -> None:
        local_backend.run({}, flow=flows.empty_flow)
        local_backend.clear_calls()
        assert local_backend.calls == []
        assert len(local_backend.flow_run_ids) == 1

    def test_calls_from_threads_are_all_recorded(self, local_backend: InMemoryBackend) -> None:
        flow_run_id = local_backend.submit({}, flow=flows.empty_flow)
        local_backend.clear_calls()

        def ask(times: int) -> None:
            for _ in range(times):
                local_backend.get_state(flow_run_id)

        threads = [threading.Thread(target=ask, args=(200,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert local_backend.calls == [Call("get_state", {"flow_run_id": flow_run_id})] * 1600

    def test_public_methods_keep_the_port_signatures(self) -> None:
        import inspect

        from lume_scheduling.application import Backend

        for name in ("run", "run_and_return", "submit", "register_flow", "wait", "result"):
            assert inspect.signature(getattr(InMemoryBackend, name)) == inspect.signature(
                getattr(Backend, name)
            )


class TestPerInstanceState:
    def test_two_fakes_share_nothing(self, id_factory: Callable[[], str]) -> None:
        one = InMemoryBackend(id_factory=id_factory)
        two = InMemoryBackend()
        one.create_project("lume")
        flow_id = one.register_flow(flows.arithmetic_flow, "lume")
        flow_run_id = one.submit({}, flow_id=flow_id)
        one.script_failure("twin", "only in one")
        one.script_unavailable(True)

        assert two.projects == []
        assert two.calls == []
        assert two.flow_run_ids == []
        assert two.flow_versions("arithmetic", "lume") == []
        with pytest.raises(ValueError, match="create it first"):
            two.register_flow(flows.arithmetic_flow, "lume")
        with pytest.raises(FlowRunNotFoundError):
            two.get_state(flow_run_id)
        assert two.run_and_return({}, task_name="double-1", flow=flows.twin_flow) == 6
        two.script_hang("arithmetic")
        one.script_unavailable(False)
        assert one.run_and_return({}, task_name="add", flow=flows.arithmetic_flow) == 3


class TestRegistryProperties:
    @settings(max_examples=60, deadline=None)
    @given(
        keys=st.lists(
            st.one_of(st.none(), st.sampled_from(["a", "b", "c"])), min_size=1, max_size=12
        )
    )
    def test_a_registration_makes_a_version_unless_its_key_repeats_the_last(
        self, keys: List[Optional[str]]
    ) -> None:
        backend = InMemoryBackend()  # fresh per example
        backend.create_project("lume")
        ids = [backend.register_flow(flows.twin_flow, "lume", idempotency_key=key) for key in keys]
        expected_versions = 0
        for position, key in enumerate(keys):
            repeats = position > 0 and key is not None and key == keys[position - 1]
            if repeats:
                assert ids[position] == ids[position - 1]
            else:
                expected_versions += 1
                assert ids[position] not in ids[:position]
        versions = backend.flow_versions("twin", "lume")
        assert [version.version for version in versions] == list(range(1, expected_versions + 1))
        assert backend.load_flow("twin", "lume")["flow_id"] == ids[-1] == versions[-1].flow_id
