"""The Dask backend: Prefect 1 flow runs spread over a Dask cluster, one Dask task per run.

`DaskBackend()` starts an embedded ``distributed.LocalCluster``;
`DaskBackend(address=...)` joins a scheduler; `DaskBackend(cluster=...)` takes
any Dask cluster object (a dask-jobqueue ``SLURMCluster``...). See the README,
"The Dask backend".
"""

from .backend import LOGGER_NAME, DaskBackend, dataset_name

__all__ = ["LOGGER_NAME", "DaskBackend", "dataset_name"]
