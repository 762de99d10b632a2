"""Domain run configs to Prefect 1 run configs (`DockerRun`, `KubernetesRun`).

Mapping is an adapter's job: the domain models stay free of prefect. Values are
passed on as written (Kubernetes quantities included); only the packaged job
template is added when a Kubernetes run config names none.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Dict, Optional

import yaml
from prefect.run_configs import DockerRun, KubernetesRun
from prefect.run_configs import RunConfig as PrefectRunConfig

from lume_scheduling.domain import DockerRunConfig, KubernetesRunConfig, RunConfig
from lume_scheduling.domain.documents import load_yaml, read_document

JOB_TEMPLATE_RESOURCE = "job_template.yaml"


@lru_cache(maxsize=1)
def _job_template_text() -> str:
    return resources.files(__package__).joinpath(JOB_TEMPLATE_RESOURCE).read_text(encoding="utf-8")


def default_job_template() -> Dict[str, Any]:
    """A fresh copy of the packaged Kubernetes job template (``job_template.yaml``)."""
    template = yaml.safe_load(_job_template_text())
    assert isinstance(template, dict)
    return template


def _quantity(value: Any) -> Optional[str]:
    # Kubernetes reads quantities as strings; ints and floats keep their digits.
    return None if value is None else str(value)


def to_prefect_run_config(config: RunConfig, env: Optional[Dict[str, str]] = None) -> PrefectRunConfig:
    """Build the Prefect run config for a domain run config.

    Args:
        config: A `DockerRunConfig` or `KubernetesRunConfig`.
        env: The env to send instead of ``config.env`` (already merged by the
            caller); None uses ``config.env``.

    Returns:
        A ``DockerRun`` or a ``KubernetesRun``.

    Raises:
        TypeError: ``config`` is another kind of run config.
    """
    run_env = dict(config.env or {}) if env is None else dict(env)
    if isinstance(config, DockerRunConfig):
        return DockerRun(
            image=config.image,
            env=run_env or None,
            labels=list(config.labels),
            host_config=None if config.host_config is None else dict(config.host_config),
            ports=None if config.ports is None else list(config.ports),
        )
    if isinstance(config, KubernetesRunConfig):
        template: Any = config.job_template
        path = config.job_template_path
        if template is None and path is None:
            template = default_job_template()
        elif path is not None and ("://" not in path or path.startswith(("file://", "local://"))):
            # Read local templates here, with the safe loader, and send their content.
            local = path.split("://", 1)[1] if "://" in path else path
            # Checked when the run config was built; read again within the same limits.
            template = load_yaml(read_document(local))
            path = None
        return KubernetesRun(
            job_template=None if template is None else dict(template),
            job_template_path=path,
            image=config.image,
            env=run_env or None,
            cpu_limit=_quantity(config.cpu_limit),
            cpu_request=_quantity(config.cpu_request),
            memory_limit=_quantity(config.memory_limit),
            memory_request=_quantity(config.memory_request),
            service_account_name=config.service_account_name,
            image_pull_secrets=None if config.image_pull_secrets is None else list(config.image_pull_secrets),
            labels=list(config.labels),
            image_pull_policy=config.image_pull_policy,
        )
    raise TypeError(
        f"a server backend runs DockerRunConfig or KubernetesRunConfig, not {type(config).__name__}"
    )


def describe(config: RunConfig) -> str:
    """A log-safe summary of a run config: kind, labels, image, env names only."""
    image = getattr(config, "image", None)
    names = sorted(config.env or {})
    return f"{type(config).__name__}(labels={list(config.labels)}, image={image!r}, env names={names})"
