"""Fixtures of the server backend tests: the emulated Prefect Server
(``tests/server/emulator/``, loaded by path: ``tests/`` is not a package) and
prefect's own agents running flows against it.

- ``agent_kind``: the kind of agent flow runs are executed by; prefect's
  LocalAgent (`LocalAgentKind`) unless a test module or class overrides the
  fixture (e.g. with `KubernetesAgentKind`: prefect's KubernetesAgent on the
  Kubernetes API double of ``tests/server/kubernetes/``).
- ``emulator``: a server with one agent of that kind (labels ``lume-services``),
  shared by the tests of the session and reset after each test (its flow runs
  ended, its database emptied but for the agent rows).
- ``make_emulator``: a factory of private emulators (own settings, own agents, or
  none), closed after the test.
- ``backend`` (Docker and Kubernetes), ``docker``, ``register``, ``seed_run``.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from lume_scheduling.adapters.server import DockerBackend, KubernetesBackend
from lume_scheduling.adapters.testing import flows

EMULATOR_NAME = "lume_scheduling_tests_emulator"
EMULATOR_PATH = Path(__file__).with_name("emulator") / "__init__.py"


def load_emulator() -> Any:
    """The emulator package, imported once under `EMULATOR_NAME`."""
    if EMULATOR_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            EMULATOR_NAME, EMULATOR_PATH, submodule_search_locations=[str(EMULATOR_PATH.parent)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[EMULATOR_NAME] = module  # its submodules and pickling look it up here
        spec.loader.exec_module(module)
    return sys.modules[EMULATOR_NAME]


emulator_module = load_emulator()
Emulated = emulator_module.Emulated
IMAGE = emulator_module.IMAGE
PROJECT = "lume-tests"


class EmulatorPool:
    """One shared emulator per agent kind, started on first use, closed at the end of
    the session (an agent costs a Python process start; sharing it keeps the suite
    fast)."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._shared: Dict[str, Any] = {}

    def get(self, agent_kind: Any) -> Any:
        if agent_kind.key not in self._shared:
            emulated = Emulated(self._workdir / agent_kind.key, agent_kind)
            self._shared[agent_kind.key] = emulated
            try:
                emulated.agent.wait_registered(emulated.server)
            except RuntimeError:
                self._shared.pop(agent_kind.key).close()
                raise
        emulated = self._shared[agent_kind.key]
        if not emulated.agent.alive():
            raise RuntimeError(f"the shared {agent_kind.key} agent has died:\n{emulated.agent.output()}")
        return emulated

    def threads(self) -> List[threading.Thread]:
        return [thread for emulated in self._shared.values() for thread in emulated.threads()]

    def close(self) -> None:
        for emulated in self._shared.values():
            emulated.close()
        self._shared.clear()


@pytest.fixture(scope="session")
def emulator_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorPool]:
    pool = EmulatorPool(tmp_path_factory.mktemp("emulated-server"))
    yield pool
    pool.close()


@pytest.fixture
def agent_kind() -> Any:
    """The kind of agent that executes flow runs: prefect's LocalAgent."""
    return emulator_module.LocalAgentKind()


@pytest.fixture
def emulator(emulator_pool: EmulatorPool, agent_kind: Any) -> Iterator[Any]:
    """The shared emulator of ``agent_kind``, fresh for this test."""
    emulated = emulator_pool.get(agent_kind)
    yield emulated
    emulated.reset()


@pytest.fixture
def make_emulator(tmp_path: Path, agent_kind: Any) -> Iterator[Callable[..., Any]]:
    """``make_emulator(agent=True, labels=..., settings=..., agent_env=...)``: a private
    emulator (see `Emulated`), closed after the test."""
    started: List[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("agent_kind", agent_kind)
        emulated = Emulated(tmp_path / f"emulator-{len(started) + 1}", **options)
        started.append(emulated)
        return emulated

    yield make
    for emulated in started:
        emulated.close()


@pytest.fixture(params=["docker", "kubernetes"])
def backend(request: Any, emulator: Any) -> Iterator[Any]:
    """A Docker or a Kubernetes backend on the emulator, with a project."""
    kind = DockerBackend if request.param == "docker" else KubernetesBackend
    with kind(emulator.config()) as server_backend:
        server_backend.create_project(PROJECT)
        yield server_backend


@pytest.fixture
def docker(emulator: Any) -> Iterator[DockerBackend]:
    with DockerBackend(emulator.config()) as server_backend:
        server_backend.create_project(PROJECT)
        yield server_backend


@pytest.fixture
def register(backend: Any) -> Callable[..., str]:
    """Register an example flow on ``backend``; returns the flow id."""

    def do(flow: Any = flows.arithmetic_flow, **options: Any) -> str:
        options.setdefault("no_url", True)
        return backend.register_flow(flow, PROJECT, **options)

    return do


@pytest.fixture(scope="session")
def container_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Docker Engine API: ``podman system service`` on a unix socket in the
    session's temporary directory (`podman.PodmanEngine`), with the flow runs' image
    imported; stopped, and everything it kept removed, at the end of the session.

    An engine that cannot start fails the test with its reason when ``CI`` is set
    (``.ci/run`` installs podman and runc), and skips it with that reason elsewhere.
    """
    podman = emulator_module.podman
    problem = podman.start_failure()
    engine = None
    if problem is None:
        engine = podman.PodmanEngine(tmp_path_factory.mktemp("container-engine"), IMAGE)
        try:
            engine.start()
        except (podman.EngineError, OSError, subprocess.SubprocessError) as error:
            problem = f"podman could not start: {error}"
            engine.stop()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"no container engine: {problem}", pytrace=False)
        pytest.skip(f"no container engine: {problem}")
    yield engine
    engine.stop()


@pytest.fixture(autouse=True)
def no_thread_left(emulator_pool: EmulatorPool) -> Iterator[None]:
    """Every test ends with the threads and processes it started gone (the
    emulator fixtures, set up later, are closed before this check; the shared
    emulators live for the session)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2
    while set(threading.enumerate()) - before - set(emulator_pool.threads()) and time.monotonic() < deadline:
        time.sleep(0.02)  # request handler threads finish their last answer
    assert not set(threading.enumerate()) - before - set(emulator_pool.threads()), "threads left running"
    assert not multiprocessing.active_children(), "processes left running"


def seed_run(emulated: Any, flow_id: str, final: Any, task_runs: Any = ()) -> str:
    """A flow run written straight into the emulator (no agent runs it: its label
    is one no agent has), through the server's own rules.

    Args:
        emulated: The emulator.
        flow_id: A registered flow.
        final: The prefect state the run ends in.
        task_runs: ``(slug, name, map_index, prefect state)`` tuples; ``map_index``
            -1 is the task run the server created with the flow run.
    """
    rules = emulated.server.rules
    store = emulated.store
    with store.lock:
        flow_run_id = rules.create_flow_run(flow_id=flow_id, labels=["seeded-no-agent"])
        tasks = {task["slug"]: task for task in store.where("task", flow_id=flow_id)}
        for slug, _name, index, state in task_runs:
            info = rules.get_or_create_task_run_info(flow_run_id, tasks[slug]["id"], index)
            rules.set_task_run_state(info["id"], state)
        rules.set_flow_run_state(flow_run_id, final)
    return flow_run_id
