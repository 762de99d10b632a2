"""lume-services' own Docker backend tests, run against lume-scheduling as a
migrating service would, on the emulated Prefect Server: its
``tests/scheduling/test_backends.py`` ``TestDockerBackend`` (with the fixtures of
``tests/fixtures/services/scheduling.py``) with the imports changed and every call
kept as written (the tests it skips included), then the calls its ``Flow``
makes through ``SchedulingService`` on a server backend.

The backend is configured in lume-services' shape:
``DockerBackend(config=PrefectConfig(server=PrefectServerConfig(host=..., host_port=...)))``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator, List
from urllib.parse import urlparse

import pytest

from lume_scheduling.adapters.lume_services import (
    DockerBackend,
    DockerRunConfig,
    KubernetesBackend,
    PrefectConfig,
    PrefectServerConfig,
    PrefectUIConfig,
)
from lume_scheduling.adapters.testing.flows import lume_services_failure_flow as failure_flow
from lume_scheduling.adapters.testing.flows import lume_services_flow as flow
from lume_scheduling.application import SchedulingService
from lume_scheduling.domain import EmptyResultError, FlowFailedError, TaskNotInFlowError

PREFECT_DOCKER_TAG = "ghcr.io/slac-ml/lume-services:1.0"
# Short polls on the emulator (lume-services' own settings know none of these).
FAST = dict(poll_interval=0.02, poll_backoff=1.5, poll_max_interval=0.1, request_retries=1, agent_check_after=None)


def prefect_config(emulator: Any) -> PrefectConfig:
    """lume-services' settings shape, pointing at the emulator."""
    address = urlparse(emulator.url)
    return PrefectConfig(
        server=PrefectServerConfig(
            host=f"{address.scheme}://{address.hostname}", host_port=str(address.port), tag="core-1.4.0", **FAST
        ),
        ui=PrefectUIConfig(host="http://localhost", host_port="8080"),
        backend="server",
    )


@pytest.fixture
def docker_run_config(tmp_path: Path) -> DockerRunConfig:
    return DockerRunConfig(
        image=PREFECT_DOCKER_TAG,
        env={"EXTRA_PIP_PACKAGES": "/lume/flows"},
        host_config={"mounts": [{"type": "bind", "target": "/lume/flows", "source": str(tmp_path)}]},
    )


class TestDockerBackend:
    @pytest.fixture
    def backend(self, emulator: Any) -> Iterator[DockerBackend]:
        with DockerBackend(config=prefect_config(emulator)) as backend:
            yield backend

    @pytest.fixture
    def project_name(self, backend: DockerBackend) -> str:
        project_name = "test_docker_backend"
        backend.create_project(project_name=project_name)
        return project_name

    @pytest.fixture
    def flow_id(self, backend: DockerBackend, project_name: str) -> str:
        return backend.register_flow(
            flow, project_name=project_name, image=PREFECT_DOCKER_TAG, labels=["lume-services"], no_url=True
        )

    @pytest.fixture
    def failure_flow_id(self, backend: DockerBackend, project_name: str) -> str:
        return backend.register_flow(
            failure_flow, project_name=project_name, image=PREFECT_DOCKER_TAG, labels=["lume-services"], no_url=True
        )

    @pytest.fixture
    def parameters(self, tmp_path: Path) -> Dict[str, str]:
        return {
            "text1": "hey",
            "text2": " you",
            "filename": f"{tmp_path}/test_docker_backend.txt",
            "filesystem_identifier": "mounted",
        }

    def test_run_flow_type_error(
        self, backend: DockerBackend, parameters: Dict[str, str], docker_run_config: DockerRunConfig
    ) -> None:
        with pytest.raises(TypeError):
            backend.run(parameters, docker_run_config, flow_id=flow)

    def test_run_flow(
        self, backend: DockerBackend, parameters: Dict[str, str], docker_run_config: DockerRunConfig, flow_id: str
    ) -> None:
        flow_run_id = backend.run(parameters, docker_run_config, flow_id=flow_id)
        assert backend.wait(flow_run_id, timeout=60).value == "success"

    def test_run_flow_and_return(
        self, backend: DockerBackend, parameters: Dict[str, str], docker_run_config: DockerRunConfig, flow_id: str
    ) -> None:
        res = backend.run_and_return(parameters, docker_run_config, flow_id=flow_id)
        assert isinstance(res, (dict,))
        res = backend.run_and_return(parameters, docker_run_config, flow_id=flow_id, task_name="save_text_file")
        assert isinstance(res, (dict,))
        assert Path(parameters["filename"]).read_text() == "hey you"

    def test_task_not_in_flow_error(
        self, backend: DockerBackend, parameters: Dict[str, str], flow_id: str, docker_run_config: DockerRunConfig
    ) -> None:
        with pytest.raises(TaskNotInFlowError):
            backend.run_and_return(parameters, docker_run_config, flow_id=flow_id, task_name="missing_task")

    def test_empty_result_error(
        self, backend: DockerBackend, parameters: Dict[str, str], flow_id: str, docker_run_config: DockerRunConfig
    ) -> None:
        with pytest.raises(EmptyResultError):
            backend.run_and_return(
                parameters, docker_run_config, flow_id=flow_id, task_name="configure_lume_services"
            )

    def test_failure_check(
        self, backend: DockerBackend, docker_run_config: DockerRunConfig, failure_flow_id: str
    ) -> None:
        with pytest.raises(FlowFailedError):
            backend.run_and_return(None, docker_run_config, flow_id=failure_flow_id)


@pytest.fixture(params=["docker", "kubernetes"])
def scheduling_service(request: Any, emulator: Any) -> Iterator[SchedulingService]:
    kind = DockerBackend if request.param == "docker" else KubernetesBackend
    with kind(config=prefect_config(emulator)) as backend:
        yield SchedulingService(backend=backend)


class TestFlowCallsOnAServerBackend:
    """lume-services' ``Flow.register``, ``load_flow``, ``run`` and
    ``run_and_return`` on a server backend, call for call."""

    PROJECT = "lume-services-flows"

    @pytest.fixture
    def flow_id(self, scheduling_service: SchedulingService) -> str:
        scheduling_service.create_project(project_name=self.PROJECT)
        # Flow.register: register_flow(self.prefect_flow, self.project_name, labels=..., image=...)
        return scheduling_service.register_flow(flow, self.PROJECT, labels=["lume-services"], image=PREFECT_DOCKER_TAG)

    @pytest.fixture
    def parameters(self, tmp_path: Path) -> Dict[str, str]:
        return {"text1": "a", "text2": "b", "filename": str(tmp_path / "out.txt"), "filesystem_identifier": "local"}

    def test_register_and_load_flow(self, scheduling_service: SchedulingService, flow_id: str) -> None:
        flow_dict = scheduling_service.load_flow("flow1", self.PROJECT)
        loaded = flow_dict["flow"]
        task_slugs = {task.name: task.slug for task in loaded.get_tasks()}
        parameters = {parameter.name: parameter for parameter in loaded.parameters()}
        assert flow_dict["flow_id"] == flow_id
        assert task_slugs["append_text"] == "append_text-1"
        assert set(parameters) == {"text1", "text2", "filename", "filesystem_identifier"}

    def test_flow_run(
        self, scheduling_service: SchedulingService, flow_id: str, parameters: Dict[str, str]
    ) -> None:
        # Flow.run: run(parameters=..., flow_id=self.flow_id, image=self.image, **kwargs)
        flow_run_id = scheduling_service.run(parameters=parameters, flow_id=flow_id, image=PREFECT_DOCKER_TAG)
        assert isinstance(flow_run_id, str)
        assert scheduling_service.result(flow_run_id, "append_text", timeout=60) == "ab"

    def test_flow_run_and_return(
        self, scheduling_service: SchedulingService, flow_id: str, parameters: Dict[str, str]
    ) -> None:
        # Flow.run_and_return: run_and_return(parameters=..., flow_id=..., task_name=..., image=...)
        res = scheduling_service.run_and_return(
            parameters=parameters, flow_id=flow_id, task_name="append_text", image=PREFECT_DOCKER_TAG
        )
        assert res == "ab"
        every = scheduling_service.run_and_return(
            parameters=parameters, flow_id=flow_id, task_name=None, image=PREFECT_DOCKER_TAG
        )
        assert every["save_text_file-1"]["filename"] == parameters["filename"]


README = Path(__file__).resolve().parents[2] / "README.md"


def migration_blocks() -> List[str]:
    """The Python blocks of the README's migration section, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- chapter: migration -->")
    section = text[start : text.index("<!-- end chapter: migration -->", start)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_readmes_after_block_runs_as_written(emulator: Any, register_flow1: Any, tmp_path: Path) -> None:
    before, after = migration_blocks()[:2]
    compile(before, "README before", "exec")
    address = urlparse(emulator.url)
    shown = 'host="http://localhost", host_port=4200'
    assert shown in after
    code = after.replace(shown, f'host="http://{address.hostname}", host_port={address.port}')
    filename = tmp_path / "out.txt"
    namespace: Dict[str, Any] = {
        "flow_id": register_flow1,
        "image": PREFECT_DOCKER_TAG,
        "parameters": {"text1": "hey", "text2": " you", "filename": str(filename), "filesystem_identifier": "local"},
    }
    exec(compile(code, "README after", "exec"), namespace)
    assert filename.read_text() == "hey you"
    namespace["service"].backend.close()


@pytest.fixture
def register_flow1(emulator: Any) -> Iterator[str]:
    with DockerBackend(config=prefect_config(emulator)) as backend:
        backend.create_project("lume")
        yield backend.register_flow(flow, "lume", image=PREFECT_DOCKER_TAG, no_url=True)
