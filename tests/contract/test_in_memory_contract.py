"""The backend contract suite on the in-memory fake, with and without ``server``."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from lume_scheduling.adapters.in_memory import InMemoryBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.adapters.testing.contract import BackendContractSuite


class _ScriptedHang:
    """The fake runs flows synchronously inside ``submit``: a real 60 s hang
    would block it, so the hanging flow is scripted to hang instead."""

    @pytest.fixture
    def hanging_flow(self, backend: InMemoryBackend) -> Any:
        backend.script_hang(flows.hanging_flow.name)
        return flows.hanging_flow


class TestInMemoryServerBackendContract(_ScriptedHang, BackendContractSuite):
    @pytest.fixture
    def backend(self) -> Iterator[InMemoryBackend]:
        with InMemoryBackend(server=True) as backend:
            yield backend


class TestInMemoryLocalBackendContract(_ScriptedHang, BackendContractSuite):
    @pytest.fixture
    def backend(self) -> Iterator[InMemoryBackend]:
        with InMemoryBackend(server=False) as backend:
            yield backend
