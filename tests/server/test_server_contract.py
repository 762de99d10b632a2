"""The backend contract suite on DockerBackend and KubernetesBackend.

Against the emulated Prefect Server always, with every flow run executed by
prefect's own agent (the ``agent_kind`` fixture: its LocalAgent unless a class
overrides it, as the Kubernetes class does with its KubernetesAgent) and
``prefect execute flow-run``; against a real Prefect 1 Server
with an agent (labels ``lume-services``) when ``LUME_SCHEDULING_TEST_PREFECT_API``
is set to its GraphQL address (see the README, "Against a real Prefect Server").
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Iterator

import pytest

from lume_scheduling.adapters.server import DockerBackend, KubernetesBackend, PrefectServerConfig
from lume_scheduling.adapters.testing.contract import (
    BackendContractSuite, LifecycleContract, ResultSelectionContract, RunContract, RunErrorContract,
    TimeoutAndCancelContract,
)

CONFTEST = sys.modules[next(name for name in sys.modules if name.endswith("server.conftest"))]
EMULATOR = CONFTEST.emulator_module
EMULATED_IMAGE = "ghcr.io/slac-ml/lume-services:1.0"
REAL_API = os.environ.get("LUME_SCHEDULING_TEST_PREFECT_API")
REAL_IMAGE = os.environ.get("LUME_SCHEDULING_TEST_PREFECT_IMAGE", "prefecthq/prefect:1.4.1-python3.11")


class _OnTheEmulatedServer:
    """DockerBackend on the test's emulated server, runs in the emulated image."""

    @pytest.fixture
    def backend(self, emulator: Any) -> Iterator[DockerBackend]:
        with DockerBackend(emulator.config()) as backend:
            yield backend

    @pytest.fixture
    def run_config_fields(self) -> Dict[str, Any]:
        return {"image": EMULATED_IMAGE}


@pytest.mark.real_agent
class TestDockerBackendContract(_OnTheEmulatedServer, BackendContractSuite):
    pass


@pytest.mark.real_agent
@pytest.mark.container_engine
class TestDockerBackendOnContainersContract(
    _OnTheEmulatedServer, RunContract, ResultSelectionContract, RunErrorContract, LifecycleContract,
    TimeoutAndCancelContract,
):
    """Flow runs executed by prefect's unmodified DockerAgent on a real Docker Engine
    API (podman, ``container_engine`` fixture): each a container running
    ``prefect execute flow-run``.

    The parts of the contract whose runs the agent executes: plain, mapped, failing,
    timed-out and cancelled runs, result values, runs from several threads. The
    rest (projects and flows, argument and run config checks, close) never reaches
    an agent and runs on the LocalAgent class above: a container costs about 2 s
    more than a process, and the whole suite took 186 s here on containers.
    """

    @pytest.fixture
    def agent_kind(self, container_engine: Any) -> Any:
        return EMULATOR.DockerAgentKind(container_engine)


@pytest.mark.real_agent
class TestKubernetesBackendContract(BackendContractSuite):
    """Flow runs executed by prefect's KubernetesAgent: each a batch/v1 Job on the
    Kubernetes API double, whose container command is ``prefect execute flow-run``."""

    @pytest.fixture
    def agent_kind(self) -> Any:
        return EMULATOR.KubernetesAgentKind()

    @pytest.fixture
    def backend(self, emulator: Any) -> Iterator[KubernetesBackend]:
        with KubernetesBackend(emulator.config()) as backend:
            yield backend


@pytest.mark.real_server
@pytest.mark.skipif(
    not REAL_API,
    reason="set LUME_SCHEDULING_TEST_PREFECT_API to a Prefect 1 Server's GraphQL URL "
    "(with a Docker agent labelled lume-services) to run the suite against it",
)
class TestDockerBackendOnARealServerContract(BackendContractSuite):
    @pytest.fixture
    def backend(self) -> Iterator[DockerBackend]:
        config = PrefectServerConfig(
            api_url=REAL_API or "http://localhost:4200/graphql",
            default_image=REAL_IMAGE,
            poll_interval=0.5,
            poll_max_interval=2.0,
        )
        with DockerBackend(config) as backend:
            yield backend

    @pytest.fixture
    def run_config_fields(self) -> Dict[str, Any]:
        return {"image": REAL_IMAGE}
