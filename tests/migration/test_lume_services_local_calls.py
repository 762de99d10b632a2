"""lume-services' own local backend tests, run against lume-scheduling as a
migrating service would: its ``tests/scheduling/test_backends.py``
(``TestRunConfigs``, ``TestLocalBackend``) with the imports changed and every
call kept as written, then the calls its ``Flow`` and ``SchedulingService`` make
on a local backend.

Its flows (``flow1``, ``failure_flow``) are the example flows of the same names
and task names in `lume_scheduling.adapters.testing.flows`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
from prefect.run_configs import DockerRun, KubernetesRun, LocalRun

from lume_scheduling.adapters.lume_services import (
    DockerRunConfig,
    KubernetesRunConfig,
    LocalBackend,
    LocalRunConfig,
)
from lume_scheduling.adapters.testing.flows import lume_services_failure_flow as failure_flow
from lume_scheduling.adapters.testing.flows import lume_services_flow as flow
from lume_scheduling.application import SchedulingService
from lume_scheduling.domain import (
    EmptyResultError,
    FlowFailedError,
    LocalBackendError,
    TaskNotInFlowError,
)

IMAGE = "ghcr.io/slac-ml/lume-services:1.0"


@pytest.fixture(scope="module")
def lume_env() -> Dict[str, str]:
    # lume-services takes its LUME_* variables; any names and values will do here.
    return {"LUME_BACKEND": "local", "LUME_MODEL_DB__HOST": "127.0.0.1"}


class TestRunConfigs:
    labels = ["test"]
    image = "placeholder_image_tag"
    docker_host_config = {
        "cpu_quota": 2,
        "cpu_period": 1999,
        "blkio_weight": 1999,
        "blkio_weight_device": [{"Path": "/dev/sda", "Rate": 1000}],
        "device_read_bps": [{"Path": "/dev/sda", "Rate": 1000}],
        "device_write_bps": [{"Path": "/dev/sda", "Rate": 1000}],
        "device_read_iops": [{"Path": "/dev/sda", "Rate": 1000}],
        "device_write_iops": [{"Path": "/dev/sda", "Rate": 1000}],
        "shm_size": 67108864,
        "oom_kill_disable": True,
        "userns_mode": "host",
        "oom_score_adj": 100,
        "dns_opt": ["use-vc", "no-tld-query"],
        "mem_reservation": "67108864",
        "kernel_memory": 67108864,
        "pids_limit": 1024,
        "isolation": "hyperv",
        "pid_mode": "host",
        "mem_swappiness": 40,
        "volume_driver": "local",
        "cpu_count": 2,
        "cpu_percent": 15,
        "nano_cpus": 1000,
        "cpu_rt_period": 100,
        "cpu_rt_runtime": 1000,
    }
    docker_ports = [3000]

    def test_local_run_config(self, lume_env: Dict[str, str]) -> None:
        run_config = LocalRunConfig(labels=self.labels, env=lume_env)
        # Broken on purpose: lume-services' working_dir defaulted to the directory
        # at import time; here None means the caller's directory when the run starts.
        assert run_config.working_dir is None
        assert run_config.env == lume_env
        assert all(label in run_config.labels for label in self.labels)
        prefect_run_config = run_config.build()
        assert isinstance(prefect_run_config, LocalRun)
        assert all(label in prefect_run_config.labels for label in run_config.labels)
        assert prefect_run_config.env == run_config.env
        assert prefect_run_config.working_dir == run_config.working_dir

    def test_docker_run_config(self, lume_env: Dict[str, str]) -> None:
        run_config = DockerRunConfig(
            labels=self.labels,
            env=lume_env,
            image=self.image,
            ports=self.docker_ports,
            host_config=self.docker_host_config,
        )
        prefect_run_config = run_config.build()
        assert isinstance(prefect_run_config, DockerRun)
        assert all(label in prefect_run_config.labels for label in run_config.labels)
        assert prefect_run_config.env == run_config.env

    def test_kubernetes_run_config(self, lume_env: Dict[str, str]) -> None:
        run_config = KubernetesRunConfig(labels=self.labels, env=lume_env)
        prefect_run_config = run_config.build()
        assert isinstance(prefect_run_config, KubernetesRun)
        assert all(label in prefect_run_config.labels for label in run_config.labels)
        assert prefect_run_config.env == run_config.env
        # Changed on purpose: the packaged template is added when the run config
        # is sent (build()), not stored in the run config.
        assert run_config.job_template is None
        assert prefect_run_config.job_template is not None


# lume-services' class-scoped fixtures, as module-level ones (pytest deprecates
# class-scoped fixtures defined as methods).
@pytest.fixture(scope="module")
def run_config(lume_env: Dict[str, str]) -> LocalRunConfig:
    return LocalRunConfig(labels=["test"], env=lume_env)


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalBackend]:
    # lume-services never closed its backend; ours holds worker processes.
    with LocalBackend(max_workers=1) as backend:
        yield backend


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    temp_path = tmp_path_factory.mktemp("test_local_backend")
    return {
        "text1": "hey",
        "text2": " you",
        "filename": f"{temp_path}/test_local_backend.txt",
        "filesystem_identifier": "local",
    }


@pytest.fixture(scope="module")
def scheduling_service(backend: LocalBackend) -> SchedulingService:
    return SchedulingService(backend=backend)


class TestLocalBackend:
    def test_load_flow_error(self, backend: LocalBackend) -> None:
        with pytest.raises(LocalBackendError):
            backend.load_flow("placeholder_flow_name", "placeholder_project_name")

    def test_create_project_error(self, backend: LocalBackend) -> None:
        with pytest.raises(LocalBackendError):
            backend.create_project("placeholder_project_name")

    def test_register_flow_error(self, backend: LocalBackend) -> None:
        with pytest.raises(LocalBackendError):
            backend.register_flow(flow, "placeholder_project_name")

    def test_run_flow(self, backend: LocalBackend, data: Dict[str, str], run_config: LocalRunConfig) -> None:
        backend.run(data, run_config, flow=flow)
        assert Path(data["filename"]).read_text() == "hey you"

    def test_run_flow_and_return(
        self, backend: LocalBackend, data: Dict[str, str], run_config: LocalRunConfig
    ) -> None:
        res = backend.run_and_return(data, run_config, flow=flow)
        assert isinstance(res, (dict,))

        res = backend.run_and_return(data, run_config, flow=flow, task_name="save_text_file")
        assert isinstance(res, (dict,))

        res = backend.run_and_return(data, run_config, flow=flow, task_name="append_text")
        assert isinstance(res, (str,))
        assert res == f"{data['text1']}{data['text2']}"

    def test_task_not_in_flow_error(
        self, backend: LocalBackend, data: Dict[str, str], run_config: LocalRunConfig
    ) -> None:
        with pytest.raises(TaskNotInFlowError):
            backend.run_and_return(data, run_config, flow=flow, task_name="missing_task")

    def test_empty_result_error(
        self, backend: LocalBackend, data: Dict[str, str], run_config: LocalRunConfig
    ) -> None:
        with pytest.raises(EmptyResultError):
            backend.run_and_return(data, run_config, flow=flow, task_name="configure_lume_services")

    def test_failure_check(self, backend: LocalBackend, run_config: LocalRunConfig) -> None:
        with pytest.raises(FlowFailedError):
            backend.run_and_return(None, run_config, flow=failure_flow)


class TestFlowCallsOnALocalBackend:
    """What lume-services' ``Flow.run``/``Flow.run_and_return`` and ``Model``
    send to ``SchedulingService`` when the backend is local."""

    @pytest.fixture
    def parameters(self, tmp_path: Path) -> Dict[str, str]:
        return {"text1": "a", "text2": "b", "filename": str(tmp_path / "out.txt"), "filesystem_identifier": "local"}

    def test_flow_run_and_return_passes_image(
        self, scheduling_service: SchedulingService, parameters: Dict[str, str]
    ) -> None:
        # Flow.run_and_return: parameters=, flow=, task_name=, image=self.image, **kwargs
        with pytest.warns(UserWarning, match="LocalBackend.run_and_return.. ignores image"):
            res = scheduling_service.run_and_return(
                parameters=parameters, flow=flow, task_name="append_text", image=IMAGE
            )
        assert res == "ab"

    def test_model_run_and_return_without_a_task_name(
        self, scheduling_service: SchedulingService, parameters: Dict[str, str]
    ) -> None:
        # Model.run_and_return -> Flow.run_and_return(parameters, task_name=None)
        with pytest.warns(UserWarning, match="image"):
            res = scheduling_service.run_and_return(parameters=parameters, flow=flow, task_name=None, image=IMAGE)
        assert res["append_text-1"] == "ab"
        assert res["configure_lume_services-1"] is None

    def test_flow_run(self, scheduling_service: SchedulingService, parameters: Dict[str, str]) -> None:
        # Flow.run on a local backend: parameters=, flow=, **kwargs (no image)
        assert scheduling_service.run(parameters=parameters, flow=flow, env={"LUME_X": "1"}) is None
        assert Path(parameters["filename"]).read_text() == "ab"

    def test_flow_run_with_a_run_config_keyword(
        self, scheduling_service: SchedulingService, parameters: Dict[str, str], tmp_path: Path
    ) -> None:
        run_config: Optional[Any] = LocalRunConfig(working_dir=str(tmp_path))
        assert scheduling_service.run(parameters, run_config=run_config, flow=flow) is None
        assert os.path.exists(parameters["filename"])
