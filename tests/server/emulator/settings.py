"""The emulated server's configuration: the Prefect Server's own defaults, which tests shorten."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class Settings:
    """What a Prefect Server deployment can configure, with the server's defaults.

    Attributes:
        zombie_killer_loop_seconds: Seconds between two runs of the zombie killer.
        zombie_heartbeat_cutoff_seconds: A task run (or a Cancelling flow run) whose
            flow run sent no heartbeat for this long is a zombie.
        lazarus_loop_seconds: Seconds between two runs of Lazarus.
        lazarus_heartbeat_cutoff_seconds: A Running or Submitted flow run without a
            heartbeat for this long (and no task run on its way) is revived.
        resurrection_attempt_limit: How many times Lazarus reschedules a flow run
            before failing it.
        submitted_lock_seconds: How long a flow run cannot be set Submitted again.
        queued_runs_returned_limit: Flow run ids one ``get_runs_in_queue`` returns.
        services: Whether the background services (zombie killer, Lazarus) run.
    """

    # server: src/prefect_server/services/towel/zombie_killer.py, ZombieKiller.loop_seconds_default
    zombie_killer_loop_seconds: float = 120.0
    # server: services/towel/zombie_killer.py, reap_zombie_task_runs (now - 10 minutes)
    zombie_heartbeat_cutoff_seconds: float = 600.0
    # server: src/prefect_server/services/towel/lazarus.py, Lazarus.loop_seconds_default
    lazarus_loop_seconds: float = 600.0
    # server: services/towel/lazarus.py, reschedule_flow_runs (now - 10 minutes)
    lazarus_heartbeat_cutoff_seconds: float = 600.0
    # server: src/prefect_server/config.toml, [services.lazarus] resurrection_attempt_limit
    resurrection_attempt_limit: int = 3
    # server: src/prefect_server/api/states.py, ExpiringSet(duration_seconds=30)
    submitted_lock_seconds: float = 30.0
    # server: src/prefect_server/config.toml, queued_runs_returned_limit
    queued_runs_returned_limit: int = 25
    services: bool = True

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def for_tests(cls, **changes: Any) -> "Settings":
        """The server's rules with intervals short enough for a test suite.

        The cut-offs stay far above the heartbeat interval the test runners use
        (see `agents.RUNNER_SETTINGS`), so that a slow machine never makes a
        healthy run look dead; crash tests shorten them further.
        """
        short = cls(
            zombie_killer_loop_seconds=0.5,
            zombie_heartbeat_cutoff_seconds=30.0,
            lazarus_loop_seconds=0.5,
            lazarus_heartbeat_cutoff_seconds=30.0,
            submitted_lock_seconds=30.0,
        )
        return short.replace(**changes)
