"""The backend contract suite, run on the local backend: isolated (the default)
and in-process."""

from __future__ import annotations

from typing import Iterator

import pytest

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.testing.contract import BackendContractSuite


class TestLocalBackendContract(BackendContractSuite):
    @pytest.fixture
    def backend(self) -> Iterator[LocalBackend]:
        with LocalBackend(max_workers=2) as backend:
            yield backend


class TestInProcessLocalBackendContract(BackendContractSuite):
    @pytest.fixture
    def backend(self) -> Iterator[LocalBackend]:
        with LocalBackend(max_workers=2, isolated=False) as backend:
            yield backend
