"""Server backends: flows run by Docker or Kubernetes agents of a Prefect 1 Server.

`DockerBackend` and `KubernetesBackend` share `ServerBackend`; each holds its own
prefect client built from a `PrefectServerConfig` (or from lume-services'
``PrefectConfig`` shape, `PrefectConfig`).
"""

from .backend import DockerBackend, KubernetesBackend, ServerBackend, flow_run_state
from .config import (
    PrefectAgentConfig,
    PrefectConfig,
    PrefectServerConfig,
    PrefectTelemetryConfig,
    PrefectUIConfig,
    server_config_from,
)
from .run_configs import default_job_template, to_prefect_run_config

__all__ = [
    "DockerBackend",
    "KubernetesBackend",
    "PrefectAgentConfig",
    "PrefectConfig",
    "PrefectServerConfig",
    "PrefectTelemetryConfig",
    "PrefectUIConfig",
    "ServerBackend",
    "default_job_template",
    "flow_run_state",
    "server_config_from",
    "to_prefect_run_config",
]
