"""The server's background services ("towel"): the zombie killer and Lazarus.

Nothing fails a flow run the moment its process dies. The zombie killer fails the
Running task runs of a flow run whose heartbeat has gone stale (and Cancelling
flow runs that never reached Cancelled); Lazarus then puts a Running or
Submitted flow run with a stale heartbeat and no task run on its way back to
Scheduled, so an agent runs it again, and fails it after the resurrection limit.
Both write through the same `Rules` as the API, so their states trigger the same
downstream updates, and both log what they did to the run.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

import pendulum
from prefect.engine import state as prefect_state

from .rules import LAZARUS_EXCLUDE, Rules
from .settings import Settings

logger = logging.getLogger(__name__)


def _heartbeat_enabled(rules: Rules, flow_id: str, setting: str = "heartbeat_enabled") -> bool:
    flow = rules.store.get("flow", flow_id) or {}
    group = rules.store.get("flow_group", flow.get("flow_group_id")) or {}
    return (group.get("settings") or {}).get(setting, True) is not False


def _stale(heartbeat: Optional[pendulum.DateTime], cutoff: pendulum.DateTime) -> bool:
    # `heartbeat <= cutoff` in SQL: a run that never sent one (NULL) is not matched
    return heartbeat is not None and heartbeat <= cutoff


class ZombieKiller:
    """# server: src/prefect_server/services/towel/zombie_killer.py, ZombieKiller"""

    name = "ZombieKiller"

    def __init__(self, rules: Rules, settings: Settings) -> None:
        self.rules = rules
        self.settings = settings

    def run_once(self) -> int:
        # server: zombie_killer.py, run_once: task runs first, then flow runs
        return self.reap_zombie_task_runs() + self.reap_zombie_cancelling_flow_runs()

    def _cutoff(self) -> pendulum.DateTime:
        return self.rules.store.now().subtract(seconds=self.settings.zombie_heartbeat_cutoff_seconds)

    def reap_zombie_task_runs(self) -> int:
        # server: zombie_killer.py, reap_zombie_task_runs: Running task runs whose flow run's
        # heartbeat is stale are retried (if the task has retries left and the flow run
        # is Running) or failed
        store, cutoff, zombies = self.rules.store, self._cutoff(), 0
        with store.lock:
            candidates = []
            for task_run in store.where("task_run", state="Running"):
                flow_run = store.get("flow_run", task_run["flow_run_id"]) or {}
                task = store.get("task", task_run["task_id"]) or {}
                if _stale(flow_run.get("heartbeat"), cutoff) and _heartbeat_enabled(self.rules, task.get("flow_id")):
                    candidates.append((task_run, flow_run, task))
            for task_run, flow_run, task in sorted(candidates, key=lambda c: c[0]["updated"], reverse=True)[:5000]:
                retries = len(store.where("task_run_state", task_run_id=task_run["id"], state="Retrying"))
                try:
                    if flow_run.get("state") == "Running" and retries < (task.get("max_retries") or 0):
                        message = (
                            "No heartbeat detected from the remote task; retrying the run."
                            f"This will be retry {retries + 1} of {task.get('max_retries')}."
                        )
                        start = store.now() + (task.get("retry_delay") or pendulum.duration())
                        self.rules.set_task_run_state(
                            task_run["id"], prefect_state.Retrying(message=message, run_count=retries + 1, start_time=start)
                        )
                    else:
                        message = (
                            "No heartbeat detected from the remote task; marking the "
                            f"task run {task_run['id']} ({task_run['name']}) as failed."
                        )
                        self.rules.set_task_run_state(task_run["id"], prefect_state.Failed(message=message))
                    self.rules.create_logs([dict(
                        tenant_id=task_run["tenant_id"], flow_run_id=task_run["flow_run_id"], task_run_id=task_run["id"],
                        name=f"prefect-server.{self.name}.TaskRun", message=message, level="ERROR",
                    )])
                    zombies += 1
                except ValueError:
                    logger.exception("zombie killer: task run %s", task_run["id"])
        return zombies

    def reap_zombie_cancelling_flow_runs(self) -> int:
        # server: zombie_killer.py, reap_zombie_cancelling_flow_runs: a Cancelling flow run
        # whose heartbeat is stale is failed
        store, cutoff, zombies = self.rules.store, self._cutoff(), 0
        message = "No heartbeat detected from the flow run; marking the run as failed."
        with store.lock:
            for flow_run in store.where("flow_run", state="Cancelling"):
                if not (_stale(flow_run["heartbeat"], cutoff) and _heartbeat_enabled(self.rules, flow_run["flow_id"])):
                    continue
                try:
                    self.rules.set_flow_run_state(flow_run["id"], prefect_state.Failed(message=message))
                    self.rules.create_logs([dict(
                        tenant_id=flow_run["tenant_id"], flow_run_id=flow_run["id"],
                        name=f"prefect-server.{self.name}.FlowRun", message=message, level="ERROR",
                    )])
                    zombies += 1
                except ValueError:
                    logger.exception("zombie killer: flow run %s", flow_run["id"])
        return zombies


class Lazarus:
    """# server: src/prefect_server/services/towel/lazarus.py, Lazarus"""

    name = "Lazarus"

    def __init__(self, rules: Rules, settings: Settings) -> None:
        self.rules = rules
        self.settings = settings

    def run_once(self) -> int:
        return self.reschedule_flow_runs()

    def reschedule_flow_runs(self) -> int:
        # server: lazarus.py, get_flow_runs_where_clause and reschedule_flow_runs
        store = self.rules.store
        cutoff = store.now().subtract(seconds=self.settings.lazarus_heartbeat_cutoff_seconds)
        limit = self.settings.resurrection_attempt_limit
        count = 0
        with store.lock:
            found = []
            for flow_run in store.rows("flow_run"):
                if flow_run["state"] not in ("Running", "Submitted") or not _stale(flow_run["heartbeat"], cutoff):
                    continue
                if any(t["state"] in LAZARUS_EXCLUDE for t in store.where("task_run", flow_run_id=flow_run["id"])):
                    continue  # a task run is running or scheduled: not dead
                if not (_heartbeat_enabled(self.rules, flow_run["flow_id"])
                        and _heartbeat_enabled(self.rules, flow_run["flow_id"], "lazarus_enabled")):
                    continue
                found.append(flow_run)
            for flow_run in sorted(found, key=lambda r: r["updated"])[:500]:
                times = flow_run["times_resurrected"]  # read before the update, as the server's query does
                if times < limit:
                    self.rules.set_flow_run_state(flow_run["id"], prefect_state.Scheduled(message="Rescheduled by a Lazarus process."))
                    store.update("flow_run", flow_run["id"], times_resurrected=times + 1)
                    self.rules.create_logs([dict(
                        tenant_id=flow_run["tenant_id"], flow_run_id=flow_run["id"], name=f"prefect-server.{self.name}.FlowRun",
                        message=f"Rescheduled by a Lazarus process. This is attempt {times + 1}.",
                        level="INFO",
                    )])
                    count += 1
                else:
                    message = (
                        "A Lazarus process attempted to reschedule this run "
                        f"{limit} times without success. Marking as failed."
                    )
                    self.rules.set_flow_run_state(flow_run["id"], prefect_state.Failed(message=message))
                    self.rules.create_logs([dict(
                        tenant_id=flow_run["tenant_id"], flow_run_id=flow_run["id"], name=f"prefect-server.{self.name}.FlowRun",
                        message=message, level="ERROR",
                    )])
        return count


class Towel:
    """Runs the services in one background thread, each at its own interval
    (``Settings``: ``zombie_killer_loop_seconds``, ``lazarus_loop_seconds``).

    # server: src/prefect_server/services/loop_service.py, LoopService (run_once, then sleep)
    """

    def __init__(self, rules: Rules, settings_source: Any) -> None:
        self._settings_source = settings_source  # read again at every turn: tests change them
        self.zombie_killer = ZombieKiller(rules, settings_source())
        self.lazarus = Lazarus(rules, settings_source())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emulated-towel", daemon=True)

    def start(self) -> "Towel":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        import time

        due = {"zombie": time.monotonic(), "lazarus": time.monotonic()}
        while not self._stop.wait(0.05):
            settings: Settings = self._settings_source()
            if not settings.services:
                continue
            self.zombie_killer.settings = self.lazarus.settings = settings
            now = time.monotonic()
            try:
                if now >= due["zombie"]:
                    self.zombie_killer.run_once()
                    due["zombie"] = now + settings.zombie_killer_loop_seconds
                if now >= due["lazarus"]:
                    self.lazarus.run_once()
                    due["lazarus"] = now + settings.lazarus_loop_seconds
            except Exception:  # a service error is logged; the loop goes on, as LoopService does
                logger.exception("emulated towel service failed")
