"""The backend contract suite, run on `DaskBackend` against a real LocalCluster
(the session's cluster: each test joins it with a backend of its own)."""

from __future__ import annotations

from typing import Iterator

import pytest
from distributed import LocalCluster

from lume_scheduling.adapters.dask import DaskBackend
from lume_scheduling.adapters.testing.contract import BackendContractSuite


class TestDaskBackendContract(BackendContractSuite):
    @pytest.fixture
    def backend(self, dask_cluster: LocalCluster) -> Iterator[DaskBackend]:
        with DaskBackend(cluster=dask_cluster) as backend:
            yield backend
