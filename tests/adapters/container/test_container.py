"""The composition root: backend selection, lifetimes, overriding and mounting."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List

import pytest
from dependency_injector import containers, providers

import lume_scheduling.adapters.container as container_module
from lume_scheduling.adapters.container import Container, create_container
from lume_scheduling.adapters.in_memory import InMemoryBackend
from lume_scheduling.adapters.settings import SettingsError
from lume_scheduling.adapters.testing import flows
from lume_scheduling.application import Backend, SchedulingService

ROOT = Path(__file__).resolve().parents[3]
ARITHMETIC = {"add-1": 7, "add_more-1": 17, "multiply-1": 10, "x": 5, "y": 2}


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> List[Backend]:
    """Backends closed by the container; the fake is swapped for one that records it."""
    record: List[Backend] = []

    class RecordingBackend(InMemoryBackend):
        def close(self) -> None:
            record.append(self)
            super().close()

    monkeypatch.setattr("lume_scheduling.adapters.in_memory.InMemoryBackend", RecordingBackend)
    return record


@pytest.fixture
def container() -> Iterator[Container]:
    built = create_container({"backend": "fake", "fake": {"server": False}})
    yield built
    built.shutdown_resources()


class TestBackendSelection:
    @pytest.mark.parametrize("server", [True, False])
    def test_fake_builds_an_in_memory_backend_with_its_server_flag(self, server: bool) -> None:
        container = create_container({"backend": "fake", "fake": {"server": server}})
        try:
            backend = container.backend()
            assert isinstance(backend, InMemoryBackend)
            assert backend.capabilities.server is server
        finally:
            container.shutdown_resources()

    @pytest.mark.parametrize("isolated", [True, False])
    def test_local_builds_a_local_backend_with_its_settings(self, isolated: bool) -> None:
        from lume_scheduling.adapters.local import LocalBackend

        container = create_container({"backend": "local", "local": {"max_workers": 1, "isolated": isolated}})
        try:
            backend = container.backend()
            assert isinstance(backend, LocalBackend)
            assert backend.capabilities.server is False
            assert backend.capabilities.isolation is isolated
        finally:
            container.shutdown_resources()

    def test_local_passes_its_worker_options(self) -> None:
        container = create_container(
            {"backend": "local", "local": {"max_workers": 1, "max_runs_per_worker": 3, "fork_first_worker": True}}
        )
        try:
            backend = container.backend()
            assert (backend.max_runs_per_worker, backend.fork_first_worker) == (3, True)
        finally:
            container.shutdown_resources()

    def test_a_worker_option_without_isolation_is_refused_by_name(self) -> None:
        container = create_container({"backend": "local", "local": {"isolated": False, "max_runs_per_worker": 3}})
        try:
            with pytest.raises(ValueError, match="max_runs_per_worker applies to isolated runs only"):
                container.backend()
        finally:
            container.shutdown_resources()

    @pytest.mark.parametrize("kind, class_name", [("docker", "DockerBackend"), ("kubernetes", "KubernetesBackend")])
    def test_server_kinds_build_their_server_backend(self, kind: str, class_name: str) -> None:
        import lume_scheduling.adapters.server as server

        container = create_container(
            {"backend": kind, "server": {"api_url": "http://127.0.0.1:9/graphql", "api_key": "k"}}
        )
        try:
            backend = container.backend()
            assert type(backend) is getattr(server, class_name)
            assert backend.capabilities.server is True
        finally:
            container.shutdown_resources()

    def test_an_unconfigured_container_builds_the_isolated_local_backend(self) -> None:
        from lume_scheduling.adapters.local import LocalBackend

        container = Container()
        try:
            backend = container.backend()
            assert isinstance(backend, LocalBackend)
            assert backend.capabilities.isolation is True
        finally:
            container.shutdown_resources()

    def test_the_kind_comes_from_the_config_provider(self) -> None:
        container = Container()
        container.config.from_dict({"backend": "fake", "fake": {"server": True}})
        try:
            assert isinstance(container.backend(), InMemoryBackend)
        finally:
            container.shutdown_resources()

    def test_an_invalid_config_names_the_key(self) -> None:
        container = Container()
        container.config.from_dict({"backend": "fake", "fake": {"sever": True}})
        with pytest.raises(SettingsError, match=r"container config: fake\.sever: unknown key"):
            container.service()


class TestLifetimes:
    def test_the_backend_is_built_once_and_shared_by_every_service(self, container: Container) -> None:
        first, second = container.service(), container.service()
        assert isinstance(first, SchedulingService)
        assert first is not second  # the service is a Factory: cheap and stateless
        assert first.backend is second.backend is container.backend()

    def test_shutdown_closes_the_backend_once_and_a_later_call_builds_a_new_one(self, closed: List[Backend]) -> None:
        container = create_container({"backend": "fake"})
        backend = container.backend()
        container.shutdown_resources()
        assert closed == [backend]
        container.shutdown_resources()
        assert closed == [backend]
        replacement = container.backend()
        assert replacement is not backend
        container.shutdown_resources()
        assert closed == [backend, replacement]

    def test_the_container_is_a_public_name_of_the_adapters(self) -> None:
        import lume_scheduling.adapters as adapters

        assert adapters.Container is Container

    def test_no_module_level_container_exists(self) -> None:
        assert not any(
            isinstance(value, (containers.Container, providers.Provider))
            for value in vars(container_module).values()
        )


class TestOverride:
    def test_one_line_swaps_in_a_fake_and_flows_really_run_on_it(self, closed: List[Backend]) -> None:
        import lume_scheduling.adapters.in_memory as in_memory

        container = create_container({"backend": "local"})
        fake = in_memory.InMemoryBackend(server=False)  # the recording fake
        container.backend.override(fake)
        try:
            service = container.service()
            assert service.backend is fake
            result = service.run_and_return({"x": 5, "y": 2}, flow=flows.arithmetic_flow)
            assert result == ARITHMETIC
        finally:
            container.backend.reset_override()
            container.shutdown_resources()
        # The caller owns what it handed in: the container neither built nor closed a backend.
        assert closed == []
        fake.close()


class TestEmbedding:
    def test_a_service_mounts_the_container_with_its_own_config(self, closed: List[Backend]) -> None:
        class LumeService(containers.DeclarativeContainer):
            config = providers.Configuration()
            scheduling = providers.Container(Container, config=config.scheduling)
            runner = providers.Factory(lambda service: service, service=scheduling.service)

        app = LumeService()
        app.config.from_dict({"scheduling": {"backend": "fake", "fake": {"server": False}}})
        try:
            service = app.runner()
            assert service.run_and_return({"x": 5, "y": 2}, task_name="add", flow=flows.arithmetic_flow) == 7
            backend = service.backend
        finally:
            app.shutdown_resources()
        assert closed == [backend]

    def test_a_service_can_hand_in_its_own_backend(self) -> None:
        class LumeService(containers.DeclarativeContainer):
            shared_backend = providers.Singleton(InMemoryBackend, server=False)
            scheduling = providers.Container(Container, backend=shared_backend)

        app = LumeService()
        try:
            service = app.scheduling.service()
            assert service.backend is app.shared_backend()
            assert service.run_and_return({"x": 1, "y": 2}, task_name="multiply", flow=flows.arithmetic_flow) == 2
        finally:
            app.shared_backend().close()


class TestDependencyRule:
    @pytest.mark.parametrize("layer", ["domain", "application"])
    def test_inner_layers_never_import_dependency_injector_or_click(self, layer: str) -> None:
        imported = set()
        for source in (ROOT / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    imported.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module.split(".")[0])
        assert not imported & {"dependency_injector", "click"}
