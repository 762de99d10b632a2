"""Fixtures for the application tests: in-memory backends with predictable ids."""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import pytest

from lume_scheduling.adapters.in_memory import InMemoryBackend
from lume_scheduling.application import SchedulingService


@pytest.fixture
def id_factory() -> Callable[[], str]:
    """Ids ``id-1``, ``id-2``, ... (fresh per test)."""
    counter = itertools.count(1)
    return lambda: f"id-{next(counter)}"


@pytest.fixture
def backend(id_factory: Callable[[], str]) -> Iterator[InMemoryBackend]:
    """A server-like fake with predictable ids."""
    with InMemoryBackend(id_factory=id_factory) as fake:
        yield fake


@pytest.fixture
def local_backend() -> Iterator[InMemoryBackend]:
    """A fake that behaves like the local backend (no server)."""
    with InMemoryBackend(server=False) as fake:
        yield fake


@pytest.fixture
def service(backend: InMemoryBackend) -> SchedulingService:
    """The service over the server-like fake."""
    return SchedulingService(backend)
