"""The server's tables as Hasura exposes them: columns, their types and defaults, and
the relationships between tables.

# server: services/postgres/alembic/versions/2020-06-24T092037_initial_database_migration.py
#         (tables, column defaults) and the later migrations that add columns
#         (flow_run.idempotency_key, task_run.name, agent and agent_config,
#         flow.run_config, flow_run.labels, flow_run.run_config, flow_group.run_config,
#         flow_group.description)
# server: services/hasura/migrations/metadata.yaml (object and array relationships)
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

# Column types the query engine needs to compare values: uuid, timestamptz, int,
# bool, text, jsonb, interval.
UUID, TIME, INT, BOOL, TEXT, JSON, INTERVAL = "uuid", "timestamptz", "int", "bool", "text", "jsonb", "interval"

_STAMPS = {"created": TIME, "updated": TIME}

COLUMNS: Dict[str, Dict[str, str]] = {
    "tenant": {"id": UUID, **_STAMPS, "name": TEXT, "slug": TEXT, "info": JSON, "settings": JSON},
    "project": {"id": UUID, "tenant_id": UUID, **_STAMPS, "name": TEXT, "description": TEXT},
    "flow_group": {
        "id": UUID, "tenant_id": UUID, **_STAMPS, "name": TEXT, "labels": JSON, "schedule": JSON,
        "settings": JSON, "default_parameters": JSON, "run_config": JSON, "description": TEXT,
    },
    "flow": {
        "id": UUID, "tenant_id": UUID, **_STAMPS, "version": INT, "name": TEXT, "description": TEXT,
        "environment": JSON, "parameters": JSON, "project_id": UUID, "archived": BOOL,
        "version_group_id": TEXT, "storage": JSON, "core_version": TEXT, "settings": JSON,
        "serialized_flow": JSON, "schedule": JSON, "is_schedule_active": BOOL, "flow_group_id": UUID,
        "run_config": JSON,
    },
    "task": {
        "id": UUID, "tenant_id": UUID, **_STAMPS, "flow_id": UUID, "name": TEXT, "slug": TEXT,
        "description": TEXT, "type": TEXT, "max_retries": INT, "retry_delay": INTERVAL, "trigger": TEXT,
        "mapped": BOOL, "auto_generated": BOOL, "cache_key": TEXT, "is_root_task": BOOL,
        "is_terminal_task": BOOL, "is_reference_task": BOOL, "tags": JSON,
    },
    "edge": {
        "id": UUID, "tenant_id": UUID, **_STAMPS, "flow_id": UUID, "upstream_task_id": UUID,
        "downstream_task_id": UUID, "key": TEXT, "mapped": BOOL,
    },
    "flow_run": {
        "id": UUID, "tenant_id": UUID, **_STAMPS, "flow_id": UUID, "parameters": JSON,
        "scheduled_start_time": TIME, "auto_scheduled": BOOL, "heartbeat": TIME, "start_time": TIME,
        "end_time": TIME, "duration": INTERVAL, "version": INT, "state": TEXT, "state_timestamp": TIME,
        "state_message": TEXT, "state_result": JSON, "state_start_time": TIME, "serialized_state": JSON,
        "name": TEXT, "context": JSON, "times_resurrected": INT, "idempotency_key": TEXT, "labels": JSON,
        "run_config": JSON, "agent_id": UUID,
    },
    "flow_run_state": {
        "id": UUID, "tenant_id": UUID, "flow_run_id": UUID, "timestamp": TIME, "state": TEXT,
        "message": TEXT, "result": JSON, "start_time": TIME, "serialized_state": JSON, **_STAMPS,
        "version": INT,
    },
    "task_run": {
        "id": UUID, "tenant_id": UUID, **_STAMPS, "flow_run_id": UUID, "task_id": UUID, "map_index": INT,
        "version": INT, "heartbeat": TIME, "start_time": TIME, "end_time": TIME, "duration": INTERVAL,
        "run_count": INT, "state": TEXT, "state_timestamp": TIME, "state_message": TEXT,
        "state_result": JSON, "state_start_time": TIME, "serialized_state": JSON, "cache_key": TEXT,
        "name": TEXT,
    },
    "task_run_state": {
        "id": UUID, "tenant_id": UUID, "task_run_id": UUID, "timestamp": TIME, "state": TEXT,
        "message": TEXT, "result": JSON, "start_time": TIME, "serialized_state": JSON, **_STAMPS,
        "version": INT,
    },
    "log": {
        "id": UUID, "tenant_id": UUID, "flow_run_id": UUID, "task_run_id": UUID, "timestamp": TIME,
        "name": TEXT, "level": TEXT, "message": TEXT, "info": JSON, **_STAMPS, "is_loaded_from_archive": BOOL,
    },
    "agent": {
        "id": UUID, "tenant_id": UUID, **_STAMPS, "agent_config_id": UUID, "name": TEXT, "type": TEXT,
        "core_version": TEXT, "labels": JSON, "last_queried": TIME,
    },
    "agent_config": {"id": UUID, "tenant_id": UUID, **_STAMPS, "name": TEXT, "settings": JSON},
}

# Column defaults (the migrations' server_default / DEFAULT clauses); callables are
# called for each row. `id`, `created`, `updated` are filled in by the store.
_NOW = "now"
DEFAULTS: Dict[str, Dict[str, Any]] = {
    "tenant": {"settings": dict},
    "flow_group": {"settings": dict, "default_parameters": dict},
    "flow": {"parameters": dict, "archived": False, "settings": dict, "is_schedule_active": False},
    "task": {"mapped": False, "auto_generated": False, "is_root_task": False, "is_terminal_task": False,
             "is_reference_task": False, "tags": list},
    "edge": {"mapped": False},
    "flow_run": {"parameters": dict, "scheduled_start_time": _NOW, "auto_scheduled": False, "version": 0,
                 "times_resurrected": 0, "labels": list},
    "flow_run_state": {"timestamp": _NOW, "version": 0},
    "task_run": {"map_index": -1, "version": 0, "run_count": 0},
    "task_run_state": {"timestamp": _NOW, "version": 0},
    "log": {"timestamp": _NOW},
    "agent": {"labels": list, "last_queried": _NOW},
    "agent_config": {"settings": dict},
}

# (table, relationship) -> (target table, column of `table` holding the target's id)
OBJECT_RELATIONSHIPS: Dict[Tuple[str, str], Tuple[str, str]] = {
    ("task", "flow"): ("flow", "flow_id"),
    ("flow", "flow_group"): ("flow_group", "flow_group_id"),
    ("flow", "project"): ("project", "project_id"),
    ("flow", "tenant"): ("tenant", "tenant_id"),
    ("agent", "agent_config"): ("agent_config", "agent_config_id"),
    ("flow_group", "tenant"): ("tenant", "tenant_id"),
    ("project", "tenant"): ("tenant", "tenant_id"),
    ("flow_run", "agent"): ("agent", "agent_id"),
    ("flow_run", "flow"): ("flow", "flow_id"),
    ("flow_run", "tenant"): ("tenant", "tenant_id"),
    ("task_run", "flow_run"): ("flow_run", "flow_run_id"),
    ("task_run", "task"): ("task", "task_id"),
    ("task_run", "tenant"): ("tenant", "tenant_id"),
    ("edge", "downstream_task"): ("task", "downstream_task_id"),
    ("edge", "flow"): ("flow", "flow_id"),
    ("edge", "upstream_task"): ("task", "upstream_task_id"),
    ("flow_run_state", "flow_run"): ("flow_run", "flow_run_id"),
    ("task_run_state", "task_run"): ("task_run", "task_run_id"),
}

# (table, relationship) -> (target table, column of the target holding `table`'s id)
ARRAY_RELATIONSHIPS: Dict[Tuple[str, str], Tuple[str, str]] = {
    ("agent_config", "agents"): ("agent", "agent_config_id"),
    ("task", "downstream_edges"): ("edge", "upstream_task_id"),
    ("task", "task_runs"): ("task_run", "task_id"),
    ("task", "upstream_edges"): ("edge", "downstream_task_id"),
    ("flow", "edges"): ("edge", "flow_id"),
    ("flow", "flow_runs"): ("flow_run", "flow_id"),
    ("flow", "tasks"): ("task", "flow_id"),
    ("tenant", "flow_groups"): ("flow_group", "tenant_id"),
    ("tenant", "flows"): ("flow", "tenant_id"),
    ("tenant", "projects"): ("project", "tenant_id"),
    ("agent", "flow_runs"): ("flow_run", "agent_id"),
    ("flow_group", "flows"): ("flow", "flow_group_id"),
    ("project", "flows"): ("flow", "project_id"),
    ("flow_run", "logs"): ("log", "flow_run_id"),
    ("flow_run", "states"): ("flow_run_state", "flow_run_id"),
    ("flow_run", "task_runs"): ("task_run", "flow_run_id"),
    ("task_run", "logs"): ("log", "task_run_id"),
    ("task_run", "states"): ("task_run_state", "task_run_id"),
}


def default_value(table: str, column: str, now: Callable[[], Any]) -> Any:
    """The value a new row of ``table`` gets for ``column`` when none is given."""
    default = DEFAULTS.get(table, {}).get(column)
    if default == _NOW:
        return now()
    if callable(default):
        return default()
    return default
