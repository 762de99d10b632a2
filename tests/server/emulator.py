"""An emulated Prefect 1 Server (the GraphQL API the server backends use) and agent.

Test code, loaded by path (``tests/`` is not a package). The real ``prefect.Client``
talks real HTTP to `EmulatedServer`; queries are parsed with graphql-core and
answered with exactly the fields they select, from a stateful store of tenants,
projects, flows, flow runs, task runs, logs and agents. `EmulatedAgent` runs
registered flows (Module storage) in threads with prefect's own ``FlowRunner`` and
writes their states, serialized by prefect, back to the store, as a Prefect agent
and ``prefect execute flow-run`` would: each run in its own (forked) process with
its run config's env.

Faults: `EmulatedServer.fail_next` (HTTP 5xx), `graphql_error_next`, `delay`,
`stop` (the server disappears), `EmulatedAgent.crash` (the process running a flow
dies; the server's zombie killer fails the run), cancellation (the agent stops the
run's process, as an agent stops its container).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import pendulum
from graphql import FieldNode, OperationDefinitionNode, parse
from graphql.utilities import value_from_ast_untyped
from prefect.engine import state as prefect_state
from prefect.engine.flow_runner import FlowRunner
from prefect.engine.results import PrefectResult
from prefect.serialization.storage import StorageSchema
from prefect.utilities.graphql import decompress

# One process per flow run, forked so it starts in milliseconds with prefect loaded.
_FORK = multiprocessing.get_context("fork")
ZOMBIE_MESSAGE = "No heartbeat detected from the remote task; marking the run as failed."
FINAL = ("Success", "Failed", "Cancelled", "TimedOut", "Skipped", "TriggerFailed", "Finished", "Mapped")


class GraphQLError(Exception):
    """An error the emulated server reports in the ``errors`` of its answer."""


def _now() -> str:
    return pendulum.now("UTC").isoformat()


def _new_id() -> str:
    return str(uuid.uuid4())


def _check_uuid(value: Any) -> None:
    try:
        uuid.UUID(str(value))
    except ValueError:
        raise GraphQLError(f'invalid input syntax for type uuid: "{value}"') from None


def _is_final(serialized: Optional[dict]) -> bool:
    if not serialized:
        return False
    return isinstance(prefect_state.State.deserialize(serialized), prefect_state.Finished)


class Store:
    """The server's tables, each a dict of rows by id, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        tenant = _new_id()
        self.tables: Dict[str, Dict[str, dict]] = {
            "tenant": {tenant: {"id": tenant, "name": "default", "slug": "default"}},
            "project": {},
            "flow": {},
            "flow_run": {},
            "task_run": {},
            "log": {},
            "agent": {},
        }
        self._task_run_ids: Dict[Tuple[str, str, int], str] = {}
        self.flow_group_defaults: Dict[str, dict] = {}

    def rows(self, table: str) -> List[dict]:
        return list(self.tables[table].values())

    def set_flow_run_state(self, flow_run_id: str, state: prefect_state.State) -> None:
        with self.lock:
            run = self.tables["flow_run"][flow_run_id]
            serialized = state.serialize()
            run["serialized_state"] = serialized
            run["state"] = type(state).__name__
            run["version"] += 1
            run["updated"] = _now()
            run["states"].append({"timestamp": run["updated"], "serialized_state": serialized})

    def set_task_run_state(
        self, flow_run_id: str, slug: str, name: str, map_index: int, state: prefect_state.State
    ) -> None:
        with self.lock:
            key = (flow_run_id, slug, map_index)
            row = self.tables["task_run"].get(self._task_run_ids.get(key, ""))
            if row is None:
                row = {"id": _new_id(), "flow_run_id": flow_run_id, "slug": slug, "name": name,
                       "map_index": map_index, "version": 0}
                self.tables["task_run"][row["id"]] = row
                self._task_run_ids[key] = row["id"]
            row["serialized_state"] = state.serialize()
            row["state"] = type(state).__name__
            row["version"] += 1
            row["updated"] = _now()

    def add_log(self, flow_run_id: str, level: str, message: str) -> None:
        with self.lock:
            log_id = _new_id()
            self.tables["log"][log_id] = {
                "id": log_id, "flow_run_id": flow_run_id, "timestamp": _now(), "level": level, "message": message,
            }


class GraphQLExecutor:
    """Answers the queries and mutations the prefect Client and the backends send."""

    RELATIONS = {
        ("flow", "project"): ("project", "project_id"),
        ("flow_run", "flow"): ("flow", "flow_id"),
        ("task_run", "flow_run"): ("flow_run", "flow_run_id"),
    }

    def __init__(self, store: Store) -> None:
        self.store = store
        self._rows = threading.local()

    # ------------------------------------------------------------ execution
    def execute(self, query: str, variables: Dict[str, Any]) -> Tuple[Dict[str, Any], int]:
        """Answer one request: its data, and how many task run rows it returned."""
        self._rows.task_runs = 0
        document = parse(query)
        data: Dict[str, Any] = {}
        names: List[str] = []
        for definition in document.definitions:
            if not isinstance(definition, OperationDefinitionNode):
                continue
            for selection in definition.selection_set.selections:
                assert isinstance(selection, FieldNode)
                name = selection.name.value
                names.append(name)
                args = {a.name.value: value_from_ast_untyped(a.value, variables) for a in selection.arguments or ()}
                handler = getattr(self, f"_{definition.operation.value}_{name}", None)
                if handler is None:
                    raise GraphQLError(f"Cannot query field \"{name}\" on type \"{definition.operation.value}_root\".")
                with self.store.lock:
                    value = handler(args)
                    data[(selection.alias or selection.name).value] = self._project(value, selection, variables)
        return data, self._rows.task_runs

    def _project(self, value: Any, field: FieldNode, variables: Dict[str, Any]) -> Any:
        if field.selection_set is None or value is None:
            return value
        if isinstance(value, list):
            return [self._project(item, field, variables) for item in value]
        table, row = ("object", value) if isinstance(value, dict) else value
        if table == "task_run":
            self._rows.task_runs += 1
        out: Dict[str, Any] = {}
        for selection in field.selection_set.selections:
            assert isinstance(selection, FieldNode)
            name = selection.name.value
            args = {a.name.value: value_from_ast_untyped(a.value, variables) for a in selection.arguments or ()}
            out[(selection.alias or selection.name).value] = self._project(
                self._field(table, row, name, args), selection, variables
            )
        return out

    def _field(self, table: str, row: dict, name: str, args: Dict[str, Any]) -> Any:
        if (table, name) in self.RELATIONS:
            target, key = self.RELATIONS[(table, name)]
            related = self.store.tables[target].get(row[key])
            return None if related is None else (target, related)
        if table == "flow_run" and name in ("task_runs", "logs"):
            child = "task_run" if name == "task_runs" else "log"
            rows = [r for r in self.store.rows(child) if r["flow_run_id"] == row["id"]]
            return self._select(child, rows, args)
        if table == "flow" and name == "flow_group":
            labels = sorted((row.get("run_config") or {}).get("labels") or [])
            # The flow_group table's default_parameters (set_flow_group_default_parameters).
            defaults = self.store.flow_group_defaults.get(row["flow_group_id"], {})
            return ("flow_group", {"id": row["flow_group_id"], "labels": labels, "default_parameters": dict(defaults)})
        if table == "task_run" and name == "task":
            return ("task", {"id": row["slug"], "slug": row["slug"], "name": row["name"]})
        if table == "flow_run" and name == "labels":
            return list(row["labels"])
        if name not in row:
            raise GraphQLError(f"field \"{name}\" not found in type: '{table}'")
        return row[name]

    # ------------------------------------------------------------ filtering
    def _select(self, table: str, rows: Iterable[dict], args: Dict[str, Any]) -> List[Tuple[str, dict]]:
        where = args.get("where") or {}
        chosen = [row for row in rows if self._matches(table, row, where)]
        for order in reversed(self._orders(args.get("order_by"))):
            (column, direction), = order.items()
            chosen.sort(key=lambda row: self._sort_key(table, row, column), reverse=str(direction).startswith("desc"))
        offset = int(args.get("offset") or 0)
        limit = args.get("limit")
        chosen = chosen[offset:] if limit is None else chosen[offset : offset + int(limit)]
        return [(table, row) for row in chosen]

    @staticmethod
    def _orders(order_by: Any) -> List[dict]:
        if not order_by:
            return []
        orders = order_by if isinstance(order_by, list) else [order_by]
        flat = []
        for order in orders:
            for column, direction in order.items():
                flat.append({column: direction})
        return flat

    def _sort_key(self, table: str, row: dict, column: str) -> Any:
        value = row.get(column)
        return (value is None, value if value is not None else 0)

    def _matches(self, table: str, row: dict, where: Dict[str, Any]) -> bool:
        for key, condition in where.items():
            if key == "_and":
                if not all(self._matches(table, row, part) for part in condition):
                    return False
            elif key == "_or":
                if not any(self._matches(table, row, part) for part in condition):
                    return False
            elif key == "_not":
                if self._matches(table, row, condition):
                    return False
            elif (table, key) in self.RELATIONS:
                target, column = self.RELATIONS[(table, key)]
                related = self.store.tables[target].get(row[column])
                if related is None or not self._matches(target, related, condition):
                    return False
            elif table == "task_run" and key == "task":
                if not self._matches("task", {"slug": row["slug"], "name": row["name"], "id": row["slug"]}, condition):
                    return False
            elif not self._compare(key, row.get(key), condition):
                return False
        return True

    @staticmethod
    def _compare(column: str, value: Any, condition: Dict[str, Any]) -> bool:
        for operator, expected in condition.items():
            if expected is None:
                continue  # Hasura 1 ignores null comparisons
            if (column == "id" or column.endswith("_id")) and operator in ("_eq", "_neq"):
                _check_uuid(expected)
            if operator == "_eq" and value != expected:
                return False
            if operator == "_neq" and value == expected:
                return False
            if operator == "_in" and value not in expected:
                return False
            if operator == "_nin" and value in expected:
                return False
            if operator in ("_gt", "_gte", "_lt", "_lte"):
                if value is None:
                    return False
                if operator == "_gt" and not value > expected:
                    return False
                if operator == "_gte" and not value >= expected:
                    return False
                if operator == "_lt" and not value < expected:
                    return False
                if operator == "_lte" and not value <= expected:
                    return False
            if operator == "_is_null" and (value is None) != bool(expected):
                return False
        return True

    # ------------------------------------------------------------- queries
    def _query_tenant(self, args: dict) -> list:
        return self._select("tenant", self.store.rows("tenant"), args)

    def _query_project(self, args: dict) -> list:
        return self._select("project", self.store.rows("project"), args)

    def _query_flow(self, args: dict) -> list:
        return self._select("flow", self.store.rows("flow"), args)

    def _query_flow_run(self, args: dict) -> list:
        return self._select("flow_run", self.store.rows("flow_run"), args)

    def _query_task_run(self, args: dict) -> list:
        return self._select("task_run", self.store.rows("task_run"), args)

    def _query_agent(self, args: dict) -> list:
        return self._select("agent", self.store.rows("agent"), args)

    def _by_pk(self, table: str, args: dict) -> Optional[Tuple[str, dict]]:
        _check_uuid(args.get("id"))
        row = self.store.tables[table].get(str(args["id"]))
        return None if row is None else (table, row)

    def _query_flow_by_pk(self, args: dict) -> Any:
        return self._by_pk("flow", args)

    def _query_flow_run_by_pk(self, args: dict) -> Any:
        return self._by_pk("flow_run", args)

    def _query_task_run_by_pk(self, args: dict) -> Any:
        return self._by_pk("task_run", args)

    # ----------------------------------------------------------- mutations
    def _mutation_create_project(self, args: dict) -> Any:
        data = args["input"]
        if any(p["name"] == data["name"] for p in self.store.rows("project")):
            raise GraphQLError("Uniqueness violation.")
        project = {"id": _new_id(), "name": data["name"], "tenant_id": data.get("tenant_id")}
        self.store.tables["project"][project["id"]] = project
        return ("project", project)

    def _mutation_create_flow_from_compressed_string(self, args: dict) -> Any:
        data = dict(args["input"])
        data["serialized_flow"] = decompress(data["serialized_flow"])
        return self._mutation_create_flow({"input": data})

    def _mutation_create_flow(self, args: dict) -> Any:
        data = args["input"]
        project_id = data.get("project_id")
        if project_id not in self.store.tables["project"]:
            raise GraphQLError(f"Project {project_id} not found")
        serialized = dict(data["serialized_flow"])
        serialized.setdefault("tasks", [])
        serialized.setdefault("edges", [])
        same = [f for f in self.store.rows("flow") if f["name"] == serialized["name"] and f["project_id"] == project_id]
        latest = max(same, key=lambda f: f["version"], default=None)
        key = data.get("idempotency_key")
        if latest is not None and key is not None and latest["idempotency_key"] == key:
            return ("flow", latest)
        for older in same:
            older["archived"] = True
        group = data.get("version_group_id") or (latest["flow_group_id"] if latest else _new_id())
        flow = {
            "id": _new_id(), "name": serialized["name"], "project_id": project_id, "flow_group_id": group,
            "version": (latest["version"] + 1) if latest else 1, "archived": False,
            "serialized_flow": serialized, "idempotency_key": key, "created": _now(),
            "run_config": serialized.get("run_config"), "storage": serialized.get("storage"),
            "settings": {}, "core_version": serialized.get("environment", {}).get("__version__", "1.4.1"),
        }
        self.store.tables["flow"][flow["id"]] = flow
        return ("flow", flow)

    def _mutation_register_tasks(self, args: dict) -> Any:
        data = args["input"]
        self.store.tables["flow"][data["flow_id"]]["serialized_flow"]["tasks"].extend(data["serialized_tasks"])
        return ("result", {"success": True})

    def _mutation_register_edges(self, args: dict) -> Any:
        data = args["input"]
        self.store.tables["flow"][data["flow_id"]]["serialized_flow"]["edges"].extend(data["serialized_edges"])
        return ("result", {"success": True})

    def _mutation_set_schedule_active(self, args: dict) -> Any:
        return ("result", {"success": True})

    def _mutation_create_flow_run(self, args: dict) -> Any:
        data = args["input"]
        flow_id = data.get("flow_id")
        _check_uuid(flow_id)
        flow = self.store.tables["flow"].get(flow_id)
        if flow is None:
            raise GraphQLError(f"Flow {flow_id} not found")
        key = data.get("idempotency_key")
        for run in self.store.rows("flow_run"):
            if key is not None and run["idempotency_key"] == key:
                return ("flow_run", run)
        # api/runs.py create_flow_run: defaults, then the flow group's defaults, then
        # the run's own; names the flow does not declare are kept, not refused.
        declared = {p["name"]: p for p in flow["serialized_flow"].get("parameters", [])}
        parameters = {n: p["default"] for n, p in declared.items() if p.get("default")}
        parameters.update(self.store.flow_group_defaults.get(flow["flow_group_id"], {}))
        parameters.update(data.get("parameters") or {})
        missing = {n for n, p in declared.items() if p.get("required")} - set(parameters)
        if missing:
            raise GraphQLError(f"Required parameters were not supplied: {missing}")
        run_config = data.get("run_config") or flow["serialized_flow"].get("run_config") or {}
        labels = data.get("labels") or run_config.get("labels") or []
        run = {
            "id": _new_id(), "flow_id": flow_id, "name": f"run-{len(self.store.tables['flow_run']) + 1}",
            "parameters": parameters, "context": data.get("context") or {}, "run_config": run_config,
            "labels": sorted(labels), "idempotency_key": key, "version": 0, "states": [],
            "scheduled_start_time": _now(), "created": _now(), "updated": _now(),
        }
        self.store.tables["flow_run"][run["id"]] = run
        self.store.set_flow_run_state(run["id"], prefect_state.Scheduled("Flow run scheduled."))
        return ("flow_run", run)

    def _mutation_cancel_flow_run(self, args: dict) -> Any:
        flow_run_id = args["input"]["flow_run_id"]
        _check_uuid(flow_run_id)
        with self.store.lock:
            run = self.store.tables["flow_run"].get(flow_run_id)
            if run is None:
                raise GraphQLError(f"Flow run {flow_run_id} not found")
            if not _is_final(run["serialized_state"]):
                if run["state"] == "Running":
                    self.store.set_flow_run_state(flow_run_id, prefect_state.Cancelling("Flow run is cancelling"))
                elif run["state"] != "Cancelling":
                    self.store.set_flow_run_state(flow_run_id, prefect_state.Cancelled("Flow run is cancelled"))
            return ("result", {"state": run["state"]})


def _close_inherited_listeners() -> None:
    """Close the listening sockets a forked run inherits (the emulated servers'), so
    that stopping a server really refuses connections while runs go on."""
    import socket
    import stat

    for fd in range(3, 1024):
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
        except OSError:
            continue
        sock = socket.socket(fileno=fd)
        try:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:
            listening = 0
        if listening:
            sock.close()
        else:
            sock.detach()


def _child_main(
    conn: Any,
    storage: dict,
    flow_name: str,
    parameters: dict,
    context: dict,
    env: Dict[str, str],
    default_result: Optional[Callable[[], Any]],
) -> None:
    """The flow run's own process (forked): what `prefect execute flow-run` does in a
    container. Sends its states and logs to the agent through ``conn``."""
    import prefect

    _close_inherited_listeners()

    class PipeHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            conn.send(("log", record.levelname, record.getMessage()))

    # This process is the container: its logging and env are its own.
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.handlers = [PipeHandler(logging.INFO)]
    os.environ.update(env)
    try:
        flow = StorageSchema().load(storage).get_flow(flow_name).copy()
    except Exception as err:
        conn.send(("flow", prefect_state.Failed(f"Failed to load flow from storage: {err!r}").serialize()))
        return
    if flow.result is None and default_result is not None:
        flow.result = default_result()

    def on_flow_state(_flow: Any, _old: Any, new: prefect_state.State) -> prefect_state.State:
        if not isinstance(new, prefect_state.Pending):
            conn.send(("flow", new.serialize()))
        return new

    def on_task_state(runner: Any, _old: Any, new: prefect_state.State) -> prefect_state.State:
        index = prefect.context.get("map_index")
        conn.send(("task", flow.slugs.get(runner.task, runner.task.slug), runner.task.name, -1 if index is None else int(index), new.serialize()))
        return new

    FlowRunner(flow=flow, state_handlers=[on_flow_state]).run(
        parameters=parameters, task_runner_state_handlers=[on_task_state], context=context
    )
    conn.send(("done",))


class EmulatedAgent:
    """Picks up scheduled flow runs whose labels it has; each runs in its own process.

    Like a Docker or Kubernetes agent, it starts one process per flow run (forked,
    so that it starts in milliseconds), with the run config's env, and relays the
    states prefect reports to the server. Cancelling a run stops its process, as
    an agent stops the container.

    Args:
        store: The emulated server's store.
        labels: The agent's labels (a run is picked up only if its labels are a
            subset).
        interval: Seconds between two polls of the store.
        default_result: Result given to flows that have none, standing in for a
            deployment whose flows store PrefectResults; None keeps no values, as a
            real agent would.
    """

    def __init__(
        self,
        store: Store,
        labels: Iterable[str] = ("lume-services",),
        interval: float = 0.01,
        default_result: Optional[Callable[[], Any]] = PrefectResult,
        name: str = "emulated-agent",
    ) -> None:
        self.store = store
        self.labels = set(labels)
        self.interval = interval
        self.default_result = default_result
        self.agent_id = _new_id()
        self.name = name
        self.threads: Dict[str, threading.Thread] = {}
        self.processes: Dict[str, Any] = {}
        self.crashed: set = set()
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._poll, name=f"{name}-loop", daemon=True)

    def start(self) -> "EmulatedAgent":
        self._loop.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._loop.join(5)
        for process in list(self.processes.values()):
            if process.is_alive():
                process.kill()
        for thread in list(self.threads.values()):
            thread.join(5)

    def alive_threads(self) -> List[Any]:
        alive: List[Any] = [t for t in self.threads.values() if t.is_alive()]
        alive += [p for p in self.processes.values() if p.is_alive()]
        return alive + ([self._loop] if self._loop.is_alive() else [])

    def crash(self, flow_run_id: str) -> None:
        """The process running ``flow_run_id`` dies without writing a state."""
        self.crashed.add(flow_run_id)
        deadline = time.monotonic() + 5
        while flow_run_id not in self.processes and time.monotonic() < deadline:
            time.sleep(0.01)
        process = self.processes[flow_run_id]
        process.kill()
        self.threads[flow_run_id].join(5)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            with self.store.lock:
                self.store.tables["agent"][self.agent_id] = {
                    "id": self.agent_id, "name": self.name, "labels": sorted(self.labels), "last_queried": _now(),
                }
                runs = self.store.rows("flow_run")
            if self.paused.is_set():
                continue
            for run in runs:
                self._look_after(run)

    def _look_after(self, run: dict) -> None:
        flow_run_id = run["id"]
        thread = self.threads.get(flow_run_id)
        if thread is None:
            if run["state"] == "Scheduled" and set(run["labels"]) <= self.labels:
                self.store.set_flow_run_state(flow_run_id, prefect_state.Submitted("Submitted for execution"))
                thread = threading.Thread(target=self._execute, args=(flow_run_id,), name=f"run-{flow_run_id[:8]}", daemon=True)
                self.threads[flow_run_id] = thread
                thread.start()
            return
        if not thread.is_alive() and run["state"] in ("Running", "Submitted"):
            # The zombie killer: the process is gone and nobody wrote a final state.
            with self.store.lock:
                # `run` is a snapshot: the run may have been cancelled since.
                if self.store.tables["flow_run"][flow_run_id]["state"] not in ("Running", "Submitted"):
                    return
                for task_run in self.store.rows("task_run"):
                    if task_run["flow_run_id"] == flow_run_id and task_run["state"] == "Running":
                        self.store.set_task_run_state(
                            flow_run_id, task_run["slug"], task_run["name"], task_run["map_index"],
                            prefect_state.Failed(ZOMBIE_MESSAGE),
                        )
                self.store.set_flow_run_state(flow_run_id, prefect_state.Failed(ZOMBIE_MESSAGE))

    def _cancel_requested(self, flow_run_id: str) -> bool:
        return self.store.tables["flow_run"][flow_run_id]["state"] in ("Cancelling", "Cancelled")

    def _execute(self, flow_run_id: str) -> None:
        """Start the run's process and relay what it reports until it ends."""
        with self.store.lock:
            run = dict(self.store.tables["flow_run"][flow_run_id])
            serialized = self.store.tables["flow"][run["flow_id"]]["serialized_flow"]
        storage = serialized.get("storage") or {}
        if storage.get("type") != "Module":
            self.store.set_flow_run_state(
                flow_run_id,
                prefect_state.Failed("Failed to load flow from storage: the emulated agent loads Module storage only"),
            )
            return
        env = dict((run["run_config"] or {}).get("env") or {})
        context = {"flow_run_id": flow_run_id, "flow_id": run["flow_id"], "checkpointing": True}
        receiver, sender = _FORK.Pipe(duplex=False)
        process = _FORK.Process(
            target=_child_main,
            args=(sender, storage, serialized["name"], run["parameters"], context, env, self.default_result),
            daemon=True,
        )
        self.store.add_log(flow_run_id, "INFO", f"Beginning flow run {run['name']!r}")
        process.start()
        sender.close()
        self.processes[flow_run_id] = process
        cancelled = False
        try:
            while True:
                if self._cancel_requested(flow_run_id) or self._stop.is_set():
                    cancelled = True
                    break
                if not receiver.poll(0.02):
                    if not process.is_alive() and not receiver.poll(0):
                        break
                    continue
                try:
                    event = receiver.recv()
                except EOFError:
                    break
                if event[0] == "done":
                    break
                if self._cancel_requested(flow_run_id):
                    cancelled = True
                    break
                self._relay(flow_run_id, event)
        finally:
            if process.is_alive():
                process.kill()
            process.join(5)
            receiver.close()
        if cancelled:
            self._write_cancelled(flow_run_id)

    def _relay(self, flow_run_id: str, event: tuple) -> None:
        kind = event[0]
        if kind == "flow":
            with self.store.lock:
                # Cancellation wins over the process's late reports, as the
                # server's state version check makes it win on a real server.
                if self._cancel_requested(flow_run_id):
                    return
                self.store.set_flow_run_state(flow_run_id, prefect_state.State.deserialize(event[1]))
        elif kind == "task":
            _, slug, name, index, serialized = event
            self.store.set_task_run_state(flow_run_id, slug, name, index, prefect_state.State.deserialize(serialized))
        elif kind == "log":
            self.store.add_log(flow_run_id, event[1], event[2])

    def _write_cancelled(self, flow_run_id: str) -> None:
        with self.store.lock:
            for task_run in self.store.rows("task_run"):
                if task_run["flow_run_id"] == flow_run_id and task_run["state"] in ("Running", "Pending"):
                    self.store.set_task_run_state(
                        flow_run_id, task_run["slug"], task_run["name"], task_run["map_index"],
                        prefect_state.Cancelled("Flow run is cancelled"),
                    )
            if self.store.tables["flow_run"][flow_run_id]["state"] != "Cancelled":
                self.store.set_flow_run_state(flow_run_id, prefect_state.Cancelled("Flow run is cancelled"))
        self.store.add_log(flow_run_id, "INFO", "Flow run has been cancelled, cancelling active tasks")


class EmulatedServer:
    """The HTTP front of the emulator: POST GraphQL on 127.0.0.1, a free port.

    Attributes:
        store: The shared tables.
        requests: One entry per request: the top-level field names it asked for.
        queries: One entry per request: its GraphQL text.
        task_runs_returned: One entry per answered request: the task run rows in it.
    """

    def __init__(self, store: Optional[Store] = None) -> None:
        self.store = store or Store()
        self.executor = GraphQLExecutor(self.store)
        self.requests: List[List[str]] = []
        self.queries: List[str] = []
        self.task_runs_returned: List[int] = []
        self.delay = 0.0
        self._faults: List[Tuple[int, str]] = []
        self._graphql_faults: List[str] = []
        self._lock = threading.Lock()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = emulator._answer(body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._running = False

    def start(self) -> "EmulatedServer":
        self._thread.start()
        self._running = True
        return self

    def stop(self) -> None:
        """Shut the HTTP server down: the next request is refused."""
        if self._running:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._running = False

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def fail_next(self, count: int = 1, status: int = 500, body: str = "Internal Server Error") -> None:
        with self._lock:
            self._faults.extend([(status, body)] * count)

    def graphql_error_next(self, message: str, count: int = 1) -> None:
        with self._lock:
            self._graphql_faults.extend([message] * count)

    def _answer(self, body: bytes) -> Tuple[int, Any]:
        if self.delay:
            time.sleep(self.delay)
        try:
            request = json.loads(body or b"{}")
            variables = request.get("variables") or {}
            if isinstance(variables, str):
                variables = json.loads(variables) or {}
            names = [d for d in _top_level(request.get("query", ""))]
        except Exception as err:
            return 400, {"errors": [{"message": f"bad request: {err}"}]}
        with self._lock:
            self.requests.append(names)
            self.queries.append(str(request.get("query", "")))
            if self._faults:
                status, text = self._faults.pop(0)
                return status, {"message": text}
            if self._graphql_faults:
                return 200, {"errors": [{"message": self._graphql_faults.pop(0)}]}
        try:
            data, task_runs = self.executor.execute(request["query"], variables)
            with self._lock:
                self.task_runs_returned.append(task_runs)
        except GraphQLError as err:
            return 200, {"errors": [{"message": str(err)}]}
        except Exception as err:  # an emulator bug shows as a server error, with its cause
            logging.getLogger(__name__).exception("emulator error answering %s", names)
            return 500, {"errors": [{"message": f"emulator error: {err!r}"}]}
        return 200, {"data": data}


def _top_level(query: str) -> List[str]:
    try:
        document = parse(query)
    except Exception:
        return ["<unparsable>"]
    names = []
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            names.extend(s.name.value for s in definition.selection_set.selections if isinstance(s, FieldNode))
    return names
