"""``backend = "dask"`` in the settings and the container: strict keys, an
address or an embedded cluster, runs published when an address is given."""

from __future__ import annotations

from pathlib import Path

import pytest
from distributed import LocalCluster

from lume_scheduling.adapters.container import create_container
from lume_scheduling.adapters.dask import DaskBackend
from lume_scheduling.adapters.settings import SettingsError, load_settings

from .conftest import echo_flow


class TestDaskSettings:
    def test_defaults(self) -> None:
        settings = load_settings(environ={})
        assert settings.dask.address is None
        assert settings.dask.n_workers is None and settings.dask.threads_per_worker is None
        assert settings.dask.publish_runs is None

    def test_a_file_and_the_environment(self, tmp_path: Path) -> None:
        file = tmp_path / "settings.toml"
        file.write_text('backend = "dask"\n[dask]\nn_workers = 3\nthreads_per_worker = 2\n', encoding="utf-8")
        settings = load_settings(file, environ={"LUME_SCHEDULING_DASK__PUBLISH_RUNS": "yes"})
        assert settings.backend == "dask"
        assert (settings.dask.n_workers, settings.dask.threads_per_worker) == (3, 2)
        assert settings.dask.publish_runs is True
        joined = load_settings(environ={"LUME_SCHEDULING_DASK__ADDRESS": "tcp://10.0.0.1:8786"})
        assert joined.dask.address == "tcp://10.0.0.1:8786"

    @pytest.mark.parametrize(
        "text, location, words",
        [
            ("[dask]\nn_workers = 0\n", "dask.n_workers", "greater than or equal to 1"),
            ("[dask]\nn_workers = 2.5\n", "dask.n_workers", "not a valid integer"),
            ('[dask]\nthreads_per_worker = "2"\n', "dask.threads_per_worker", "not a valid integer"),
            ("[dask]\naddress = 8786\n", "dask.address", "str type expected"),
            ('[dask]\naddress = " tcp://x:1"\n', "dask.address", "scheduler address"),
            ('[dask]\naddress = "tcp://x:1"\nn_workers = 2\n', "dask.n_workers", "embedded cluster only"),
            ("[dask]\npublish_runs = 1\n", "dask.publish_runs", "valid boolean"),
            ("[dask]\nworkers = 2\n", "dask.workers", "unknown key"),
        ],
    )
    def test_a_bad_key_or_value_is_named(self, tmp_path: Path, text: str, location: str, words: str) -> None:
        file = tmp_path / "bad.toml"
        file.write_text(text, encoding="utf-8")
        with pytest.raises(SettingsError) as caught:
            load_settings(file, environ={})
        assert [problem[0] for problem in caught.value.problems] == [location]
        assert words in caught.value.problems[0][1]


class TestContainer:
    def test_an_address_joins_that_scheduler_and_publishes_runs(self, dask_cluster: LocalCluster) -> None:
        container = create_container({"backend": "dask", "dask": {"address": dask_cluster.scheduler_address}})
        try:
            backend = container.backend()
            assert isinstance(backend, DaskBackend)
            assert backend.scheduler_address == dask_cluster.scheduler_address
            assert backend.publish_runs is True
            assert container.service().run_and_return({"x": 6}, task_name="echo", flow=echo_flow) == 6
        finally:
            container.shutdown_resources()
        assert backend.closed
        # Shutting the container down left the scheduler up.
        with DaskBackend(dask_cluster.scheduler_address) as again:
            assert again.run_and_return({"x": 1}, task_name="echo", flow=echo_flow) == 1

    def test_publishing_can_be_turned_off(self, dask_cluster: LocalCluster) -> None:
        container = create_container(
            {"backend": "dask", "dask": {"address": dask_cluster.scheduler_address, "publish_runs": False}}
        )
        try:
            assert container.backend().publish_runs is False
        finally:
            container.shutdown_resources()

    def test_without_an_address_an_embedded_cluster_of_that_size(self) -> None:
        container = create_container({"backend": "dask", "dask": {"n_workers": 1}})
        try:
            backend = container.backend()
            assert len(backend.client.scheduler_info()["workers"]) == 1
            assert backend.publish_runs is False
        finally:
            container.shutdown_resources()
