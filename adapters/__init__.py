"""Adapters: the scheduler port implemented for Prefect local, Docker,
Kubernetes and Dask backends and an in-memory fake, plus the composition root
and CLI.

Public names are imported on first use, so that ``import lume_scheduling.adapters``
stays cheap and one missing optional piece does not break the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC_NAMES = {
    "InMemoryBackend": "lume_scheduling.adapters.in_memory",
    "LocalBackend": "lume_scheduling.adapters.local",
    "DaskBackend": "lume_scheduling.adapters.dask",
    "ServerBackend": "lume_scheduling.adapters.server",
    "DockerBackend": "lume_scheduling.adapters.server",
    "KubernetesBackend": "lume_scheduling.adapters.server",
    "PrefectServerConfig": "lume_scheduling.adapters.server",
    "PrefectConfig": "lume_scheduling.adapters.server",
    "Container": "lume_scheduling.adapters.container",
    "LumeServicesBackend": "lume_scheduling.adapters.lume_services",
}

__all__ = sorted(_PUBLIC_NAMES)


def __getattr__(name: str) -> Any:
    try:
        module = _PUBLIC_NAMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC_NAMES))
