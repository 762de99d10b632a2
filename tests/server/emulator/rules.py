"""The server's own rules: what ``prefect_server.api`` does for each operation.

Every method follows one function of the Prefect Server's source, cited beside
it; ``ValueError`` carries the server's message, which the GraphQL layer turns
into an error of the answer (``routes``). Methods take the store's lock: each
one is a transaction.
"""

from __future__ import annotations

import datetime
import json
import random
import threading
import time
import uuid
from typing import Any, Dict, Iterable, List, Optional

import pendulum
import prefect
from prefect.engine import state as prefect_state
from prefect.serialization.state import StateSchema

from .settings import Settings
from .store import Store

_STATE_SCHEMA = StateSchema()
_ALL_STATES = [s for s in vars(prefect_state).values() if isinstance(s, type) and issubclass(s, prefect_state.State)]
# server: src/prefect_server/api/runs.py, SCHEDULED_STATES
SCHEDULED_STATES = [s.__name__ for s in _ALL_STATES if issubclass(s, (prefect_state.Scheduled, prefect_state.Queued))]
# server: src/prefect_server/services/towel/lazarus.py, LAZARUS_EXCLUDE
LAZARUS_EXCLUDE = [s.__name__ for s in _ALL_STATES if issubclass(s, (prefect_state.Scheduled, prefect_state.Running))]
# Words for flow run names (the server uses coolname's; any two-word slug will do).
_ADJECTIVES = ["amber", "brave", "calm", "daring", "eager", "fancy", "gentle", "hidden", "icy", "jolly",
               "keen", "lively", "mellow", "nimble", "olive", "proud", "quiet", "rapid", "silver", "tidy"]
_NOUNS = ["badger", "crane", "dingo", "eagle", "falcon", "gecko", "heron", "ibis", "jackal", "koala",
          "lemur", "marmot", "newt", "otter", "puffin", "quail", "raven", "seal", "tapir", "wombat"]


class NotFound(ValueError):
    """``prefect_server.utilities.exceptions.NotFound``: reported with its message."""


def _load(serialized: Any) -> prefect_state.State:
    return _STATE_SCHEMA.load(serialized)


def _interval(value: Any) -> Any:
    """A serialized retry delay (seconds) as the ``interval`` column holds it."""
    if value is None or isinstance(value, datetime.timedelta):
        return value
    return datetime.timedelta(seconds=float(value))


def _json_or_none(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


class Rules:
    """The operations of ``prefect_server.api`` on one `Store`.

    Args:
        store: The database.
        settings: The deployment's configuration (lock durations, queue limits...).
    """

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._submitted: Dict[str, float] = {}
        self._submitted_guard = threading.Lock()
        self._names = random.Random()

    def reset(self) -> None:
        with self._submitted_guard:
            self._submitted.clear()

    # ------------------------------------------------------------ projects
    def create_project(self, tenant_id: Optional[str], name: str, description: Optional[str] = None) -> str:
        # server: src/prefect_server/api/projects.py, create_project
        with self.store.lock:
            if self.store.get("tenant", tenant_id) is None:
                # server: src/prefect_server/database/hasura.py, execute (a constraint error)
                raise ValueError("Foreign key violation.")
            if self.store.where("project", tenant_id=tenant_id, name=name):
                # server: database constraint project_tenant_id_name_key, reported by database/hasura.py
                raise ValueError("Uniqueness violation.")
            return self.store.insert("project", tenant_id=tenant_id, name=name, description=description)["id"]

    # --------------------------------------------------------------- flows
    def create_flow(
        self,
        serialized_flow: Dict[str, Any],
        project_id: Optional[str],
        version_group_id: Optional[str] = None,
        set_schedule_active: bool = True,
        description: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> str:
        """The resolver and the API together.

        # server: src/prefect_server/graphql/flows.py, resolve_create_flow
        # server: src/prefect_server/api/flows.py, create_flow
        """
        with self.store.lock:
            if project_id is None:
                raise ValueError("Invalid project ID")
            if not version_group_id:
                # resolve_create_flow: the newest flow of this name in the project names the group
                same = self.store.where("flow", project_id=project_id, name=serialized_flow.get("name"))
                if same:
                    version_group_id = max(same, key=lambda f: f["created"])["version_group_id"]
            flow_id = self._create_flow(
                serialized_flow, project_id, version_group_id, set_schedule_active, description, idempotency_key
            )
            if version_group_id:
                # resolve_create_flow: archive all other versions
                for other in self.store.where("flow", version_group_id=version_group_id, archived=False):
                    if other["id"] != flow_id:
                        self.archive_flow(other["id"])
            return flow_id

    def _create_flow(
        self,
        serialized_flow: Dict[str, Any],
        project_id: str,
        version_group_id: Optional[str],
        set_schedule_active: bool,
        description: Optional[str],
        idempotency_key: Optional[str],
    ) -> str:
        # server: src/prefect_server/api/flows.py, create_flow
        project = self.store.get("project", project_id)
        if project is None:
            raise ValueError("Invalid project.")
        tenant_id = project["tenant_id"]
        version_group_id = version_group_id or str(uuid.uuid4())
        groups = self.store.where("flow_group", tenant_id=tenant_id, name=version_group_id)
        if not groups:
            group = self.store.insert(
                "flow_group", tenant_id=tenant_id, name=version_group_id,
                settings={"heartbeat_enabled": True, "lazarus_enabled": True, "version_locking_enabled": False,
                          "idempotency_key": idempotency_key},
            )
        else:
            group = groups[0]
            last_key = group["settings"].get("idempotency_key")
            if last_key and idempotency_key and last_key == idempotency_key:
                # the newest unarchived version of the group is returned, nothing is created
                unarchived = self.store.where("flow", version_group_id=version_group_id, archived=False)
                if unarchived:
                    return max(unarchived, key=lambda f: f["version"] or 0)["id"]
            self.store.update("flow_group", group["id"], settings={**group["settings"], "idempotency_key": idempotency_key})
        versions = [f["version"] or 0 for f in self.store.where("flow", version_group_id=version_group_id, tenant_id=tenant_id)]
        parameters = [
            {"name": p.get("name"), "slug": p.get("slug"), "required": bool(p.get("required", False)),
             "default": p.get("default"), **{k: v for k, v in p.items() if k not in ("name", "slug", "required", "default")}}
            for p in serialized_flow.get("parameters") or []
        ]
        flow = self.store.insert(
            "flow", tenant_id=tenant_id, project_id=project_id, name=serialized_flow.get("name"),
            serialized_flow=serialized_flow, environment=serialized_flow.get("environment"),
            run_config=serialized_flow.get("run_config"), core_version=serialized_flow.get("__version__"),
            storage=serialized_flow.get("storage"), parameters=parameters, version_group_id=version_group_id,
            version=max(versions, default=0) + 1, archived=False, flow_group_id=group["id"], description=description,
            schedule=serialized_flow.get("schedule"), is_schedule_active=False,
        )
        self.register_tasks(flow["id"], serialized_flow.get("tasks") or [])
        self.register_edges(flow["id"], serialized_flow.get("edges") or [])
        if set_schedule_active and (flow["schedule"] is not None or group["schedule"] is not None):
            self.set_schedule_active(flow["id"])
        return flow["id"]

    def register_tasks(self, flow_id: str, serialized_tasks: List[Dict[str, Any]]) -> None:
        # server: src/prefect_server/api/flows.py, register_tasks (a task per slug, with a UUID id)
        with self.store.lock:
            flow = self.store.get("flow", flow_id)
            if flow is None:
                raise ValueError("Foreign key violation.")
            known = {t["slug"] for t in self.store.where("task", flow_id=flow_id)}
            for task in serialized_tasks:
                if task["slug"] in known:
                    continue  # on_conflict task_flow_id_slug_key: nothing is updated
                known.add(task["slug"])
                trigger = task.get("trigger")
                self.store.insert(
                    "task", id=str(task.get("id") or uuid.uuid4()), tenant_id=flow["tenant_id"], flow_id=flow_id,
                    name=task.get("name"), slug=task["slug"], type=task.get("type"),
                    max_retries=task.get("max_retries") or 0, tags=list(task.get("tags") or []),
                    retry_delay=_interval(task.get("retry_delay")), trigger=trigger.get("fn") if isinstance(trigger, dict) else trigger,
                    auto_generated=bool(task.get("auto_generated", False)), cache_key=task.get("cache_key"),
                )
            current = list(flow["serialized_flow"].get("tasks") or [])
            slugs = {t["slug"] for t in current}
            current.extend(t for t in serialized_tasks if t["slug"] not in slugs)
            self.store.update("flow", flow_id, serialized_flow={**flow["serialized_flow"], "tasks": current})

    def register_edges(self, flow_id: str, serialized_edges: List[Dict[str, Any]]) -> None:
        # server: src/prefect_server/api/flows.py, register_edges
        with self.store.lock:
            flow = self.store.get("flow", flow_id)
            if flow is None:
                raise ValueError("Foreign key violation.")
            lookup = {t["slug"]: t["id"] for t in self.store.where("task", flow_id=flow_id)}

            def slug(end: Any) -> str:
                return end.get("slug") if isinstance(end, dict) else end

            try:
                ends = [(lookup[slug(e["upstream_task"])], lookup[slug(e["downstream_task"])], e) for e in serialized_edges]
            except KeyError:
                raise ValueError(
                    "Edges could not be registered - some edges reference tasks that do not exist within this flow."
                ) from None
            for upstream, downstream, edge in ends:
                self.store.insert(
                    "edge", tenant_id=flow["tenant_id"], flow_id=flow_id, upstream_task_id=upstream,
                    downstream_task_id=downstream, key=edge.get("key"), mapped=bool(edge.get("mapped", False)),
                )
            current = list(flow["serialized_flow"].get("edges") or [])
            self.store.update("flow", flow_id, serialized_flow={**flow["serialized_flow"], "edges": current + list(serialized_edges)})

    def set_schedule_active(self, flow_id: str) -> bool:
        # server: src/prefect_server/api/flows.py, set_schedule_active (the towel scheduler
        # that then creates runs is not emulated)
        with self.store.lock:
            flow = self.store.get("flow", flow_id)
            if flow is None:
                return False
            group = self.store.get("flow_group", flow["flow_group_id"]) or {}
            required = {p.get("name") for p in flow["parameters"] if p.get("required")}
            if flow["schedule"] is not None and required:
                names = required.difference(group.get("default_parameters") or {})
                clocks = [set((c.get("parameter_defaults") or {}).keys()) for c in flow["schedule"].get("clocks", [])]
                if not all(names <= c for c in clocks):
                    raise ValueError("Can not schedule a flow that has required parameters.")
            if flow["schedule"] is None and group.get("schedule") is None:
                return False
            self.store.update("flow", flow_id, is_schedule_active=True)
            return True

    def archive_flow(self, flow_id: str) -> bool:
        # server: src/prefect_server/api/flows.py, archive_flow
        with self.store.lock:
            if self.store.update("flow", flow_id, archived=True) is None:
                return False
            scheduled = self.store.where("flow_run", flow_id=flow_id, state="Scheduled")
            self.store.delete("flow_run", [r["id"] for r in scheduled if r["auto_scheduled"]])
            for run in scheduled:
                if not run["auto_scheduled"]:
                    self.cancel_flow_run(run["id"], state_message=f"Flow {flow_id} was archived.")
            return True

    # ----------------------------------------------------------- flow runs
    def create_flow_run(
        self,
        flow_id: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        context: Optional[Dict[str, Any]] = None,
        scheduled_start_time: Any = None,
        flow_run_name: Optional[str] = None,
        version_group_id: Optional[str] = None,
        labels: Optional[List[str]] = None,
        run_config: Optional[Dict[str, Any]] = None,
        idempotency_key: Optional[str] = None,
    ) -> str:
        # server: src/prefect_server/api/runs.py, create_flow_run
        if flow_id is None and version_group_id is None:
            raise ValueError("One of flow_id or version_group_id must be provided.")
        with self.store.lock:
            scheduled_start_time = scheduled_start_time or self.store.now()
            if flow_id:
                candidates = [f for f in [self.store.get("flow", flow_id)] if f is not None]
            else:
                candidates = self.store.where("flow", version_group_id=version_group_id, archived=False)
            flow = max(candidates, key=lambda f: f["version"] or 0, default=None)
            if flow is None:
                raise NotFound(
                    f"Flow {flow_id} not found" if flow_id
                    else f"Version group {version_group_id} has no unarchived flows."
                )
            if flow["archived"]:
                raise ValueError(f"Flow {flow['id']} is archived.")
            group = self.store.get("flow_group", flow["flow_group_id"]) or {}
            # active labels: given labels, given run config, flow group labels, flow group
            # run config, the flow's run config, the flow's environment
            if labels is not None:
                run_labels = list(labels)
            elif run_config is not None:
                run_labels = list(run_config.get("labels") or [])
            elif group.get("labels") is not None:
                run_labels = list(group["labels"])
            elif group.get("run_config") is not None:
                run_labels = list(group["run_config"].get("labels") or [])
            elif flow["run_config"] is not None:
                run_labels = list(flow["run_config"].get("labels") or [])
            elif flow["environment"] is not None:
                run_labels = list(flow["environment"].get("labels") or [])
            else:
                run_labels = []
            run_labels.sort()
            if run_config is None:
                run_config = group.get("run_config") if group.get("run_config") is not None else flow["run_config"]
            # parameters: truthy defaults, the group's defaults, then the given ones
            # (extra names are kept); required ones must be there
            run_parameters = {p["name"]: p["default"] for p in flow["parameters"] if p["default"]}
            run_parameters.update(group.get("default_parameters") or {})
            run_parameters.update(parameters or {})
            required = [p["name"] for p in flow["parameters"] if p["required"]]
            missing = set(required).difference(run_parameters)
            if missing:
                raise ValueError(f"Required parameters were not supplied: {missing}")
            if idempotency_key is not None:
                # on_conflict ix_flow_run_idempotency_key_unique (idempotency_key, flow_id):
                # the existing run's id, and no new state
                same = self.store.where("flow_run", flow_id=flow_id or flow["id"], idempotency_key=idempotency_key)
                if same:
                    return same[0]["id"]
            run = self.store.insert(
                "flow_run", tenant_id=flow["tenant_id"], flow_id=flow_id or flow["id"], labels=run_labels,
                parameters=run_parameters, run_config=run_config, context=context or {},
                scheduled_start_time=pendulum.instance(scheduled_start_time) if not isinstance(scheduled_start_time, str)
                else pendulum.parse(scheduled_start_time),
                name=flow_run_name or f"{self._names.choice(_ADJECTIVES)}-{self._names.choice(_NOUNS)}",
                idempotency_key=idempotency_key,
            )
            self.set_flow_run_state(
                run["id"], prefect_state.Scheduled(message="Flow run scheduled.", start_time=run["scheduled_start_time"])
            )
            return run["id"]

    def set_flow_run_state(
        self, flow_run_id: Optional[str], state: prefect_state.State, version: Optional[int] = None,
        agent_id: Optional[str] = None,
    ) -> dict:
        """Writes ``state`` whatever ``version`` says: Prefect Server has no version locking.

        # server: src/prefect_server/api/states.py, set_flow_run_state
        """
        if flow_run_id is None:
            raise ValueError("Invalid flow run ID.")
        with self.store.lock:
            run = self.store.get("flow_run", flow_run_id)
            if run is None:
                raise ValueError(f"State update failed for flow run ID {flow_run_id}")
            if state.is_submitted() and not self._lock_submitted(run["id"]):
                raise ValueError("State update failed: this run has already been submitted.")
            if isinstance(state, prefect_state.Cancelled):
                # a Cancelled flow run cancels every task run that has not finished
                for task_run in self.store.where("task_run", flow_run_id=flow_run_id):
                    if not _load(task_run["serialized_state"]).is_finished():
                        try:
                            self.set_task_run_state(task_run["id"], state)
                        except ValueError:
                            pass  # asyncio.gather(..., return_exceptions=True)
            row = self.store.insert(
                "flow_run_state", tenant_id=run["tenant_id"], flow_run_id=flow_run_id,
                version=(run["version"] or 0) + 1, state=type(state).__name__, timestamp=self.store.now(),
                message=state.message, result=_json_or_none(state.result),
                start_time=getattr(state, "start_time", None), serialized_state=state.serialize(),
            )
            if state.is_running() or state.is_submitted():
                self.update_flow_run_heartbeat(flow_run_id)
            if state.is_submitted() and agent_id and self.store.get("agent", agent_id) is not None:
                # server: src/prefect_server/api/runs.py, update_flow_run_agent
                self.store.update("flow_run", flow_run_id, agent_id=agent_id)
            return row

    def _lock_submitted(self, flow_run_id: str) -> bool:
        # server: src/prefect_server/api/states.py, submitted_state_lock (an ExpiringSet)
        with self._submitted_guard:
            now = time.monotonic()
            expiry = self._submitted.get(flow_run_id)
            if expiry is not None and expiry > now:
                return False
            self._submitted[flow_run_id] = now + self.settings.submitted_lock_seconds
            return True

    def cancel_flow_run(self, flow_run_id: Optional[str], state_message: Optional[str] = None) -> dict:
        """A finished run is left alone; a running one becomes Cancelling (its runner
        notices and writes Cancelled); any other becomes Cancelled.

        # server: src/prefect_server/api/states.py, cancel_flow_run
        """
        if not flow_run_id:
            raise ValueError("Invalid flow run ID.")
        with self.store.lock:
            run = self.store.get("flow_run", flow_run_id)
            if run is None:
                raise ValueError(f"Invalid flow run ID: {flow_run_id}.")
            state = _load(run["serialized_state"])
            if state.is_finished():
                return run
            if state.is_running():
                new: prefect_state.State = prefect_state.Cancelling(state_message or "Flow run is cancelling")
            else:
                new = prefect_state.Cancelled(state_message or "Flow run is cancelled")
            return self.set_flow_run_state(flow_run_id, new)

    def update_flow_run_heartbeat(self, flow_run_id: str) -> None:
        # server: src/prefect_server/api/runs.py, update_flow_run_heartbeat
        if self.store.update("flow_run", flow_run_id, heartbeat=self.store.now()) is None:
            raise ValueError("Invalid flow run ID")

    def update_task_run_heartbeat(self, task_run_id: str) -> None:
        # server: src/prefect_server/api/runs.py, update_task_run_heartbeat
        if self.store.update("task_run", task_run_id, heartbeat=self.store.now()) is None:
            raise ValueError("Invalid task run ID")

    # ----------------------------------------------------------- task runs
    def set_task_run_state(
        self, task_run_id: Optional[str], state: prefect_state.State, version: Optional[int] = None,
        flow_run_version: Optional[int] = None,
    ) -> dict:
        """Writes ``state`` (no version locking); a Running state is refused unless the
        flow run is Running (so while it is Cancelling).

        # server: src/prefect_server/api/states.py, set_task_run_state
        """
        if task_run_id is None:
            raise ValueError("Invalid task run ID.")
        with self.store.lock:
            task_run = self.store.get("task_run", task_run_id)
            if task_run is None:
                raise ValueError(f"State update failed for task run ID {task_run_id}")
            flow_run = self.store.get("flow_run", task_run["flow_run_id"]) or {}
            if state.is_running() and flow_run.get("state") != "Running":
                raise ValueError(
                    f"State update failed for task run ID {task_run_id}: provided "
                    f"a running state but associated flow run {task_run['flow_run_id']} is not "
                    "in a running state."
                )
            if not state.cached_inputs and (task_run["serialized_state"] or {}).get("cached_inputs"):
                state.cached_inputs = _load(task_run["serialized_state"]).cached_inputs
            row = self.store.insert(
                "task_run_state", tenant_id=task_run["tenant_id"], task_run_id=task_run_id,
                version=(task_run["version"] or 0) + 1, timestamp=self.store.now(), message=state.message,
                result=_json_or_none(state.result), start_time=getattr(state, "start_time", None),
                state=type(state).__name__, serialized_state=state.serialize(),
            )
            if state.is_running():
                self.update_task_run_heartbeat(task_run_id)
            return row

    def get_or_create_task_run_info(self, flow_run_id: str, task_id: str, map_index: Optional[int] = None) -> dict:
        # server: src/prefect_server/api/runs.py, get_or_create_task_run_info
        map_index = -1 if map_index is None else map_index
        with self.store.lock:
            found = self.store.where("task_run", flow_run_id=flow_run_id, task_id=task_id, map_index=map_index)
            if found:
                run = found[0]
                return {"id": run["id"], "version": run["version"], "state": run["state"],
                        "serialized_state": run["serialized_state"]}
            task = self.store.get("task", task_id)
            if task is None:
                raise ValueError("Invalid task ID")
            flow_run = self.store.get("flow_run", flow_run_id)
            if flow_run is None:
                raise ValueError("Foreign key violation.")
            serialized = prefect_state.Pending(message="Task run created").serialize()
            run = self.store.insert(
                "task_run", tenant_id=task["tenant_id"], flow_run_id=flow_run_id, task_id=task_id,
                map_index=map_index, cache_key=task["cache_key"], version=0,
            )
            self.store.insert(
                "task_run_state", tenant_id=task["tenant_id"], task_run_id=run["id"], state="Pending",
                timestamp=self.store.now(), message="Task run created", serialized_state=serialized,
            )
            return {"id": run["id"], "version": 0, "state": "Pending", "serialized_state": serialized}

    def get_task_run_info(self, task_run_id: str) -> dict:
        # server: src/prefect_server/graphql/runs.py, resolve_get_task_run_info
        run = self.store.get("task_run", task_run_id)
        if run is None:
            raise ValueError("Invalid task run ID")
        return {"version": run["version"], "serialized_state": run["serialized_state"], "state": run["state"],
                "id": task_run_id}

    # -------------------------------------------------------------- agents
    def register_agent(
        self, tenant_id: Optional[str], labels: Optional[List[str]], agent_config_id: Optional[str] = None,
        name: Optional[str] = None, type: Optional[str] = None, core_version: Optional[str] = None,
    ) -> str:
        """The same agent (tenant, name, type, core version, labels) registering again
        gets its row back; rows are never removed when an agent stops.

        # server: src/prefect_server/api/agents.py, register_agent
        """
        with self.store.lock:
            if not tenant_id:
                tenants = self.store.rows("tenant")
                if not tenants:
                    raise ValueError("No tenant found.")
                tenant_id = tenants[0]["id"]
            labels = sorted(labels or [])
            for agent in self.store.rows("agent"):
                if (agent["tenant_id"], agent["name"], agent["type"], agent["core_version"], agent["labels"]) == (
                    tenant_id, name, type, core_version, labels
                ):
                    return agent["id"]
            return self.store.insert(
                "agent", tenant_id=tenant_id, agent_config_id=agent_config_id, labels=labels, name=name, type=type,
                core_version=core_version,
            )["id"]

    def get_runs_in_queue(
        self, tenant_id: Optional[str], before: Any = None, labels: Optional[Iterable[str]] = None,
        agent_id: Optional[str] = None,
    ) -> List[str]:
        """Runs due by ``before`` whose labels are a subset of ``labels``; a run without
        labels goes only to an agent without labels.

        # server: src/prefect_server/api/runs.py, get_runs_in_queue
        """
        if tenant_id is None:
            raise ValueError("Invalid tenant ID")
        with self.store.lock:
            before = self.store.now() if before is None else before
            agent_labels = set(labels or [])

            def due(run: dict) -> bool:
                if run["state"] in SCHEDULED_STATES:
                    return run["state_start_time"] is not None and run["state_start_time"] <= before
                if run["state"] == "Running":
                    return any(
                        t["state"] in SCHEDULED_STATES and t["state_start_time"] is not None
                        and t["state_start_time"] <= before
                        for t in self.store.where("task_run", flow_run_id=run["id"])
                    )
                return False

            queued = [r for r in self.store.where("flow_run", tenant_id=tenant_id) if due(r)]
            queued.sort(key=lambda r: (r["state_start_time"] is None, r["state_start_time"] or before))
            limit = self.settings.queued_runs_returned_limit
            chosen: List[str] = []
            for run in queued[: limit * 3]:
                if len(chosen) == limit:
                    continue
                run_labels = set(run["labels"] or [])
                if run_labels - agent_labels:
                    continue  # the run has a label the agent lacks
                if not run_labels and agent_labels:
                    continue  # a run without labels is never given to a labelled agent
                chosen.append(run["id"])
            if agent_id:
                # server: src/prefect_server/api/agents.py, update_agent_last_queried
                self.store.update("agent", agent_id, last_queried=self.store.now())
            return chosen

    # ---------------------------------------------------------------- logs
    def create_logs(self, logs: List[Dict[str, Any]]) -> None:
        """Stores each log with the client's timestamp (the server's clock only when
        the client sent none); one insert for the whole batch.

        # server: src/prefect_server/api/logs.py, create_logs
        """
        with self.store.lock:
            now = self.store.now()
            rows = []
            for log in logs:
                timestamp = log.get("timestamp") or now
                rows.append(dict(
                    id=str(log.get("id") or uuid.uuid4()), tenant_id=log.get("tenant_id"),
                    flow_run_id=log.get("flow_run_id"), task_run_id=log.get("task_run_id"),
                    timestamp=pendulum.instance(timestamp) if not isinstance(timestamp, str) else pendulum.parse(timestamp),
                    message=log.get("message"), name=log.get("name"), level=log.get("level") or "INFO",
                    info=log.get("info"), is_loaded_from_archive=log.get("is_loaded_from_archive", False),
                ))
            # log_flow_run_id_fkey / log_task_run_id_fkey: one bad row fails the insert
            for row in rows:
                if (row["flow_run_id"] and self.store.get("flow_run", row["flow_run_id"]) is None) or (
                    row["task_run_id"] and self.store.get("task_run", row["task_run_id"]) is None
                ):
                    raise ValueError("Foreign key violation.")
            for row in rows:
                self.store.insert("log", **row)


def core_version() -> str:
    return str(prefect.__version__)
