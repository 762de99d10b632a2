"""Fixtures of the server backend tests: an emulated Prefect Server with an agent.

The emulator (``emulator.py`` beside this file) is loaded by path, because
``tests/`` is not a package.
"""

from __future__ import annotations

import importlib.util
import sys
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from lume_scheduling.adapters.server import DockerBackend, KubernetesBackend, PrefectServerConfig
from lume_scheduling.adapters.testing import flows

_NAME = "lume_scheduling_tests_server_emulator"


def _load_emulator() -> Any:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name("emulator.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module  # dataclasses and pickling look classes up here
    spec.loader.exec_module(module)
    return module


emulator_module = _load_emulator()

IMAGE = "ghcr.io/slac-ml/lume-services:1.0"
PROJECT = "lume-tests"


class Emulated:
    """A running emulated server and agent."""

    def __init__(self, **agent_options: Any) -> None:
        self.store = emulator_module.Store()
        self.server = emulator_module.EmulatedServer(self.store).start()
        self.agent = emulator_module.EmulatedAgent(self.store, **agent_options).start()
        self.url = self.server.url

    def config(self, **overrides: Any) -> PrefectServerConfig:
        """Backend settings for this emulator, with short poll intervals."""
        fields = dict(
            api_url=self.url,
            default_image=IMAGE,
            request_timeout=2.0,
            request_retries=1,
            request_backoff=0.05,
            poll_interval=0.02,
            poll_backoff=1.5,
            poll_max_interval=0.1,
            cancel_timeout=5.0,
            agent_check_after=None,
        )
        fields.update(overrides)
        return PrefectServerConfig(**fields)

    def close(self) -> None:
        self.agent.stop()
        self.server.stop()
        leftover = self.agent.alive_threads()
        assert not leftover, f"emulated agent threads still running: {leftover}"


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Emulated]]:
    """A factory of emulators; every one is shut down after the test."""
    started = []

    def make(**agent_options: Any) -> Emulated:
        emulated = Emulated(**agent_options)
        started.append(emulated)
        return emulated

    yield make
    for emulated in started:
        emulated.close()


@pytest.fixture
def emulator(make_emulator: Callable[..., Emulated]) -> Emulated:
    return make_emulator()


@pytest.fixture(params=["docker", "kubernetes"])
def backend(request: Any, emulator: Emulated) -> Iterator[Any]:
    """A Docker or a Kubernetes backend on the emulator, with a project."""
    kind = DockerBackend if request.param == "docker" else KubernetesBackend
    with kind(emulator.config()) as server_backend:
        server_backend.create_project(PROJECT)
        yield server_backend


@pytest.fixture
def docker(emulator: Emulated) -> Iterator[DockerBackend]:
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


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    """Every test ends with the threads and processes it started gone (the
    emulator fixtures, set up later, are closed before this check)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.02)  # request handler threads finish their last answer
    assert not set(threading.enumerate()) - before, "threads left running"
    assert not multiprocessing.active_children(), "processes left running"


def seed_run(emulated: Emulated, flow_id: str, final: Any, task_runs: Any = ()) -> str:
    """A flow run written straight into the emulator's store (no agent runs it).

    Args:
        emulated: The emulator.
        flow_id: A registered flow.
        final: The prefect state the run ends in.
        task_runs: ``(slug, name, map_index, prefect state)`` tuples.
    """
    store = emulated.store
    with store.lock:
        _, run = emulated.server.executor._mutation_create_flow_run(
            {"input": {"flow_id": flow_id, "labels": ["seeded-no-agent"]}}
        )
        for slug, name, index, state in task_runs:
            store.set_task_run_state(run["id"], slug, name, index, state)
        store.set_flow_run_state(run["id"], final)
    return run["id"]
