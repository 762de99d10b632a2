"""The local backend: Prefect 1 flows run on this machine.

`LocalBackend()` runs each flow run in a warm worker process (time-outs and
cancel kill it for real, a crash cannot take the caller down, env and
working_dir never leak); `LocalBackend(isolated=False)` runs them in threads of
this process, for debugging. See the README, "The local backend".

Names are imported on first use, so that ``start_fork_server`` can be called
before this process has imported prefect.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._fork_server import start_early as start_fork_server

_PUBLIC_NAMES = {
    "LOGGER_NAME": "lume_scheduling.adapters.local.backend",
    "LocalBackend": "lume_scheduling.adapters.local.backend",
}

__all__ = ["LOGGER_NAME", "LocalBackend", "start_fork_server"]


def __getattr__(name: str) -> Any:
    try:
        module = _PUBLIC_NAMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC_NAMES))
