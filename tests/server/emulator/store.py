"""The server's database: one dict of rows per table, under one lock, with the
triggers Postgres runs on insert and update.

Timestamps are kept as UTC ``pendulum.DateTime`` objects and rendered as ISO
strings by the query engine; JSON columns hold plain Python values.
"""

from __future__ import annotations

import copy
import threading
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import pendulum

from . import schema

# server: services/postgres/alembic/versions/2021-03-16T221106_improve_run_triggers_to_handle_same_.py
# (the states whose insert sets a run's end_time)
_END_STATES = ("Success", "Failed", "Cached", "TimedOut", "Looped", "Cancelled")
# server: services/postgres/alembic/versions/2020-06-24T092037_initial_database_migration.py,
# insert_task_runs_after_flow_run_insert (the literal state the trigger writes)
TASK_RUN_CREATED = {"type": "Pending", "message": "Task run created"}


def new_id() -> str:
    return str(uuid.uuid4())


class Store:
    """The tables of one server, with one default tenant.

    Args:
        clock: The database's ``now()``; UTC. Tests may pass their own.

    Attributes:
        lock: Held by every reader and writer (the emulator answers one request at
            a time per table access, as a transaction would).
        tables: ``{table: {id: row}}``.
        tenant_id: The tenant ``prefect server create-tenant`` made.
    """

    def __init__(self, clock: Optional[Callable[[], pendulum.DateTime]] = None) -> None:
        self.lock = threading.RLock()
        self.clock = clock or (lambda: pendulum.now("UTC"))
        self.tables: Dict[str, Dict[str, dict]] = {name: {} for name in schema.COLUMNS}
        # Postgres' indexes on the foreign keys: {(table, column): {value: {row id}}}.
        # Columns of rows are changed through `update` so that these stay right.
        self._indexes: Dict[Tuple[str, str], Dict[Any, Set[str]]] = {
            (table, column): {} for table, columns in schema.COLUMNS.items()
            for column, kind in columns.items() if kind == schema.UUID and column != "id"
        }
        # server: initial_database_migration.py, task_run_unique_identifier_key
        self._unique: Dict[str, Tuple[str, ...]] = {"task_run": ("flow_run_id", "task_id", "map_index")}
        self._unique_rows: Dict[str, Dict[Tuple[Any, ...], str]] = {table: {} for table in self._unique}
        self.tenant_id = self.insert("tenant", name="default", slug="default")["id"]

    def now(self) -> pendulum.DateTime:
        return self.clock()

    # ------------------------------------------------------------------ rows
    def rows(self, table: str) -> List[dict]:
        with self.lock:
            return list(self.tables[table].values())

    def get(self, table: str, row_id: Any) -> Optional[dict]:
        with self.lock:
            return self.tables[table].get(str(row_id)) if row_id is not None else None

    def where(self, table: str, **equal: Any) -> List[dict]:
        """Rows whose columns equal the given values (through an index if one has them)."""
        with self.lock:
            key = self._unique.get(table)
            if key is not None and set(key) <= set(equal):
                row_id = self._unique_rows[table].get(tuple(equal[c] for c in key))
                found = [] if row_id is None else [self.tables[table][row_id]]
                return [row for row in found if all(row.get(k) == v for k, v in equal.items())]
            rows: Iterable[dict] = self.tables[table].values()
            for column, value in equal.items():
                index = self._indexes.get((table, column))
                if index is not None:
                    rows = [self.tables[table][row_id] for row_id in index.get(value, ())]
                    break
            return [row for row in rows if all(row.get(k) == v for k, v in equal.items())]

    def _index(self, table: str, row: dict, add: bool) -> None:
        key = self._unique.get(table)
        if key is not None:
            values = tuple(row.get(c) for c in key)
            if add:
                self._unique_rows[table][values] = row["id"]
            elif self._unique_rows[table].get(values) == row["id"]:
                del self._unique_rows[table][values]
        for (indexed, column), index in self._indexes.items():
            if indexed != table:
                continue
            ids = index.setdefault(row.get(column), set())
            if add:
                ids.add(row["id"])
            else:
                ids.discard(row["id"])

    def insert(self, table: str, **values: Any) -> dict:
        """Insert a row (column defaults filled in) and run the table's insert triggers."""
        columns = schema.COLUMNS[table]
        unknown = set(values) - set(columns)
        if unknown:
            raise KeyError(f"no column {sorted(unknown)} in table {table}")
        with self.lock:
            now = self.now()
            row = {column: schema.default_value(table, column, self.now) for column in columns}
            row.update({"id": new_id()} if "id" in columns else {})
            if "created" in columns:
                row["created"] = row["updated"] = now
            row.update(copy.deepcopy(values))
            self.tables[table][row["id"]] = row
            self._index(table, row, add=True)
            trigger = getattr(self, f"_after_insert_{table}", None)
            if trigger is not None:
                trigger(row)
            return row

    def update(self, table: str, row_id: str, **values: Any) -> Optional[dict]:
        """Update one row; returns it, or None if there is none with this id."""
        with self.lock:
            row = self.tables[table].get(str(row_id))
            if row is None:
                return None
            self._index(table, row, add=False)
            row.update(copy.deepcopy(values))
            self._index(table, row, add=True)
            # server: initial_database_migration.py, set_updated_timestamp (BEFORE UPDATE)
            if "updated" in row:
                row["updated"] = self.now()
            return row

    def delete(self, table: str, row_ids: Iterable[str]) -> int:
        with self.lock:
            deleted = 0
            for row_id in list(row_ids):
                row = self.tables[table].pop(str(row_id), None)
                if row is not None:
                    self._index(table, row, add=False)
                    deleted += 1
            return deleted

    def reset(self, keep_agents: bool = True) -> None:
        """Empty every table but the tenant (and, by default, the agent rows, which a
        running agent registered): a fresh database for the next test."""
        with self.lock:
            for table, rows in self.tables.items():
                if table == "tenant" or (keep_agents and table in ("agent", "agent_config")):
                    continue
                rows.clear()
                self._unique_rows.get(table, {}).clear()
                for (indexed, _column), index in self._indexes.items():
                    if indexed == table:
                        index.clear()

    # -------------------------------------------------------------- triggers
    def _after_insert_flow_run(self, run: dict) -> None:
        # server: services/postgres/alembic/versions/2020-06-24T092037_initial_database_migration.py,
        # insert_task_runs_after_flow_run_insert: one Pending task run per task of the flow
        for task in self.where("task", flow_id=run["flow_id"]):
            task_run = self.insert(
                "task_run", tenant_id=run["tenant_id"], flow_run_id=run["id"], task_id=task["id"],
                cache_key=task["cache_key"], map_index=-1,
            )
            self.insert(
                "task_run_state", tenant_id=run["tenant_id"], task_run_id=task_run["id"], state="Pending",
                message="Task run created", serialized_state=dict(TASK_RUN_CREATED),
            )

    def _after_insert_flow_run_state(self, state: dict) -> None:
        self._apply_state(self.tables["flow_run"].get(state["flow_run_id"]), state)

    def _after_insert_task_run_state(self, state: dict) -> None:
        self._apply_state(self.tables["task_run"].get(state["task_run_id"]), state)

    def _apply_state(self, run: Optional[dict], state: dict) -> None:
        # server: services/postgres/alembic/versions/2021-03-16T221106_improve_run_triggers_to_handle_same_.py,
        # update_flow_run_details_on_state_insert / update_task_run_details_on_state_insert:
        # a state whose version is at least the run's becomes the run's current state
        if run is None or state["version"] < (run["version"] or 0):
            return
        timestamp = state["timestamp"]
        if state["state"] == "Running":
            run["start_time"] = min(run["start_time"] or timestamp, timestamp)
        if state["state"] in _END_STATES:
            run["end_time"] = max(run["end_time"] or timestamp, timestamp)
        run.update(
            version=state["version"],
            state=state["state"],
            serialized_state=copy.deepcopy(state["serialized_state"]),
            state_start_time=state["start_time"],
            state_timestamp=timestamp,
            state_message=state["message"],
            state_result=copy.deepcopy(state["result"]),
            updated=self.now(),
        )
