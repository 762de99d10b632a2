"""Server backends: flows run by Docker or Kubernetes agents of a Prefect 1 Server.

`DockerBackend` and `KubernetesBackend` share `ServerBackend`; each holds its own
prefect client built from a `PrefectServerConfig`.
"""

from .backend import DockerBackend, KubernetesBackend, ServerBackend, flow_run_state
from .config import PrefectServerConfig
from .run_configs import default_job_template, to_prefect_run_config

__all__ = [
    "DockerBackend",
    "KubernetesBackend",
    "PrefectServerConfig",
    "ServerBackend",
    "default_job_template",
    "flow_run_state",
    "to_prefect_run_config",
]
