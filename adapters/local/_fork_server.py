"""The fork server worker processes are forked from, set up without importing prefect here.

multiprocessing's fork server is one per interpreter: a single-threaded process
that imports its preload modules once and forks a child for each worker. The
backend adds the worker module (and so prefect) to whatever preloads the
application set. `start_early` starts it at once, so that a caller that is
about to import prefect itself (the command line loading a flow file) has the
two imports run side by side instead of one after the other.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver
from typing import Any

WORKER_MODULE = "lume_scheduling.adapters.local._worker"


def add_worker_preload(ctx: Any) -> None:
    """Make the fork server preload the worker module, keeping other preloads.

    Args:
        ctx: A ``multiprocessing`` forkserver context.
    """
    preload = list(getattr(forkserver._forkserver, "_preload_modules", None) or [])
    if WORKER_MODULE not in preload:
        ctx.set_forkserver_preload(preload + [WORKER_MODULE])


def start_early() -> bool:
    """Start the fork server now (it then imports prefect in the background).

    Returns:
        True if there is a fork server on this platform (started now or before).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    add_worker_preload(multiprocessing.get_context("forkserver"))
    forkserver.ensure_running()
    return True
