"""The GraphQL API: the Python GraphQL server's queries and mutations (answered by
`rules`) beside Hasura's table queries (answered by `hasura`), behind one endpoint
as Apollo stitches them.

A request is checked first (unknown fields, wrong input types: an HTTP 400 with
the errors, as Apollo answers), then each top-level field is executed; an error
of a resolver leaves that field null and adds the error (HTTP 200). Mutations
answer their payload types only (``create_flow_run { id }``), never whole rows.

# server: src/prefect_server/graphql/schema/*.graphql (inputs and payloads)
# server: src/prefect_server/graphql/*.py (the resolvers)
# server: src/prefect_server/graphql/scalars.py (UUID, DateTime, JSON)
# server: services/apollo/src/index.js (one schema stitched from Hasura and the server)
"""

from __future__ import annotations

import functools
import json
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import pendulum
import prefect
from graphql import DocumentNode, FieldNode, GraphQLError, OperationDefinitionNode, parse
from prefect.serialization.state import StateSchema
from prefect.utilities.graphql import decompress

from . import schema
from .hasura import Hasura, HasuraError, arguments, render
from .rules import Rules

_STATES = StateSchema()

# Input types: field -> GraphQL type ("!" required, "[...]" list).
INPUTS: Dict[str, Dict[str, str]] = {
    "create_flow_run_input": {
        "flow_id": "UUID", "parameters": "JSON", "labels": "[String!]", "run_config": "JSON", "context": "JSON",
        "scheduled_start_time": "DateTime", "idempotency_key": "String", "flow_run_name": "String",
        "version_group_id": "String",
    },
    "set_flow_run_states_input": {"states": "[set_flow_run_state_input!]!"},
    "set_flow_run_state_input": {"flow_run_id": "UUID!", "version": "Int", "state": "JSON!"},
    "set_task_run_states_input": {"states": "[set_task_run_state_input!]!"},
    "set_task_run_state_input": {"task_run_id": "UUID!", "version": "Int", "state": "JSON!", "flow_run_version": "Int"},
    "cancel_flow_run_input": {"flow_run_id": "UUID!"},
    "get_or_create_task_run_info_input": {"flow_run_id": "UUID!", "task_id": "UUID!", "map_index": "Int"},
    "get_or_create_task_run_input": {"flow_run_id": "UUID!", "task_id": "UUID!", "map_index": "Int"},
    "update_flow_run_heartbeat_input": {"flow_run_id": "UUID!"},
    "update_task_run_heartbeat_input": {"task_run_id": "UUID!"},
    "get_runs_in_queue_input": {"tenant_id": "UUID!", "before": "DateTime", "labels": "[String!]"},
    "register_agent_input": {
        "tenant_id": "UUID", "labels": "[String!]", "agent_config_id": "UUID", "type": "String!", "name": "String",
    },
    "write_run_logs_input": {"logs": "[write_run_log_input!]!"},
    "write_run_log_input": {
        "flow_run_id": "UUID!", "task_run_id": "UUID", "timestamp": "DateTime", "message": "String", "name": "String",
        "level": "log_level", "info": "JSON",
    },
    "create_project_input": {"tenant_id": "UUID!", "name": "String!", "description": "String"},
    "create_flow_input": {
        "serialized_flow": "JSON!", "project_id": "UUID!", "version_group_id": "String",
        "set_schedule_active": "Boolean", "description": "String", "idempotency_key": "String",
    },
    "create_flow_from_compressed_string_input": {
        "serialized_flow": "String!", "project_id": "UUID!", "version_group_id": "String",
        "set_schedule_active": "Boolean", "description": "String", "idempotency_key": "String",
    },
    "register_tasks_input": {"serialized_tasks": "JSON!", "flow_id": "UUID!"},
    "register_edges_input": {"serialized_edges": "JSON!", "flow_id": "UUID!"},
    "set_schedule_active_input": {"flow_id": "UUID!"},
    "archive_flow_input": {"flow_id": "UUID!"},
    "set_flow_run_name_input": {"flow_run_id": "UUID!", "name": "String!"},
    "set_task_run_name_input": {"task_run_id": "UUID!", "name": "String!"},
    "set_flow_run_labels_input": {"flow_run_id": "UUID!", "labels": "[String!]!"},
    "delete_flow_run_input": {"flow_run_id": "UUID!"},
    "create_tenant_input": {"name": "String!", "slug": "String!"},
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Payload types: field -> nested payload type (None for a scalar).
PAYLOADS: Dict[str, Dict[str, Optional[str]]] = {
    "success_payload": {"success": None, "error": None},
    "flow_run_id_payload": {"id": None},
    "flow_id_payload": {"id": None},
    "project_id_payload": {"id": None},
    "tenant_id_payload": {"id": None},
    "agent_id_payload": {"id": None},
    "task_run_id_payload": {"id": None},
    "get_or_create_task_run_info_payload": {"id": None, "version": None, "state": None, "serialized_state": None},
    "task_run_info_payload": {"id": None, "version": None, "serialized_state": None, "state": None},
    "runs_in_queue_payload": {"flow_run_ids": None},
    "set_flow_run_states_payload": {"states": "set_flow_run_state_payload"},
    "set_flow_run_state_payload": {"id": None, "status": None, "message": None},
    "set_task_run_states_payload": {"states": "set_task_run_state_payload"},
    "set_task_run_state_payload": {"id": None, "status": None, "message": None},
    "cancel_flow_run_payload": {"state": None},
    "api_info": {"backend": None, "mode": None, "version": None, "core_version": None, "release_timestamp": None},
    "mapped_children_payload": {"min_start_time": None, "max_end_time": None, "state_counts": None},
}


@functools.lru_cache(maxsize=512)
def parse_query(query: str) -> DocumentNode:
    """The parsed document (agents and runners send the same few queries again and again)."""
    return parse(query)


class RequestError(Exception):
    """The request is refused before anything runs (Apollo's HTTP 400)."""

    def __init__(self, errors: List[dict]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass
class Request:
    """One request: its GraphQL, variables and the ``X-PREFECT-*`` headers."""

    query: str
    variables: Dict[str, Any]
    headers: Dict[str, str]
    counted: Dict[str, int] = field(default_factory=dict)

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())


def _error(message: str, node: Optional[FieldNode] = None, path: Optional[List[str]] = None) -> dict:
    error: Dict[str, Any] = {"message": message}
    if node is not None and node.loc is not None:
        error["locations"] = [{"line": node.loc.source.get_location(node.loc.start).line,
                               "column": node.loc.source.get_location(node.loc.start).column}]
    if path:
        error["path"] = path
    return error


class Routes:
    """Executes requests against `Rules` and `Hasura`.

    Args:
        rules: The server's operations.
        hasura: The table queries.
    """

    def __init__(self, rules: Rules, hasura: Hasura) -> None:
        self.rules = rules
        self.hasura = hasura
        store = rules.store
        # mutation -> (input type, payload type, resolver(input, request))
        self.mutations: Dict[str, Tuple[str, str, Callable[[dict, Request], Any]]] = {
            "create_flow_run": ("create_flow_run_input", "flow_run_id_payload", self._create_flow_run),
            "set_flow_run_states": ("set_flow_run_states_input", "set_flow_run_states_payload", self._set_flow_run_states),
            "set_task_run_states": ("set_task_run_states_input", "set_task_run_states_payload", self._set_task_run_states),
            "cancel_flow_run": ("cancel_flow_run_input", "cancel_flow_run_payload", self._cancel_flow_run),
            "get_or_create_task_run_info": (
                "get_or_create_task_run_info_input", "get_or_create_task_run_info_payload", self._get_or_create_task_run_info,
            ),
            "get_or_create_task_run": ("get_or_create_task_run_input", "task_run_id_payload", self._get_or_create_task_run),
            "update_flow_run_heartbeat": ("update_flow_run_heartbeat_input", "success_payload", self._flow_heartbeat),
            "update_task_run_heartbeat": ("update_task_run_heartbeat_input", "success_payload", self._task_heartbeat),
            "get_runs_in_queue": ("get_runs_in_queue_input", "runs_in_queue_payload", self._get_runs_in_queue),
            "register_agent": ("register_agent_input", "agent_id_payload", self._register_agent),
            "write_run_logs": ("write_run_logs_input", "success_payload", self._write_run_logs),
            "create_project": ("create_project_input", "project_id_payload", self._create_project),
            "create_flow": ("create_flow_input", "flow_id_payload", self._create_flow),
            "create_flow_from_compressed_string": (
                "create_flow_from_compressed_string_input", "flow_id_payload", self._create_flow_compressed,
            ),
            "register_tasks": ("register_tasks_input", "success_payload", self._register_tasks),
            "register_edges": ("register_edges_input", "success_payload", self._register_edges),
            "set_schedule_active": ("set_schedule_active_input", "success_payload",
                                    lambda i, r: {"success": rules.set_schedule_active(i["flow_id"])}),
            "archive_flow": ("archive_flow_input", "success_payload",
                             lambda i, r: {"success": rules.archive_flow(i["flow_id"])}),
            "set_flow_run_name": ("set_flow_run_name_input", "success_payload", self._set_flow_run_name),
            "set_task_run_name": ("set_task_run_name_input", "success_payload", self._set_task_run_name),
            "set_flow_run_labels": ("set_flow_run_labels_input", "success_payload", self._set_flow_run_labels),
            "create_tenant": ("create_tenant_input", "tenant_id_payload",
                              lambda i, r: {"id": store.insert("tenant", name=i["name"], slug=i["slug"])["id"]}),
        }

    # --------------------------------------------------------------- execution
    def execute(self, request: Request) -> Tuple[int, Dict[str, Any]]:
        """(HTTP status, answer) for one request."""
        try:
            document = parse_query(request.query)
        except GraphQLError as err:
            return 400, {"errors": [{"message": f"Syntax Error: {err.message}"}]}
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(operations) != 1:
            return 400, {"errors": [{"message": "the emulator answers documents with exactly one operation"}]}
        operation = operations[0]
        kind = operation.operation.value
        fields: List[FieldNode] = []
        for selection in operation.selection_set.selections:
            if not isinstance(selection, FieldNode):
                return 400, {"errors": [{"message": "the emulator does not implement fragments"}]}
            fields.append(selection)
        try:
            for node in fields:
                self._validate(kind, node, request)
        except RequestError as err:
            return 400, {"errors": err.errors}
        data: Dict[str, Any] = {}
        errors: List[dict] = []
        for node in fields:
            key = (node.alias or node.name).value
            try:
                data[key] = self._execute_field(kind, node, request)
            except (ValueError, TypeError, HasuraError) as err:
                data[key] = None
                errors.append(_error(str(err), node, [key]))
        answer: Dict[str, Any] = {"data": data}
        if errors:
            answer["errors"] = errors
        return 200, answer

    def _execute_field(self, kind: str, node: FieldNode, request: Request) -> Any:
        name = node.name.value
        if kind == "query":
            if name == "hello":
                # server: src/prefect_server/graphql/query.py, resolve_hello
                return "👋"
            if name == "api":
                # server: src/prefect_server/graphql/query.py, the `api` resolver
                return self._payload("api_info", {
                    "backend": "SERVER", "mode": "normal", "version": "emulated",
                    "core_version": str(prefect.__version__), "release_timestamp": None,
                }, node)
            if name == "get_task_run_info":
                task_run_id = self._coerce("UUID!", arguments(node, request.variables).get("task_run_id"), "task_run_id")
                return self._payload("task_run_info_payload", self.rules.get_task_run_info(task_run_id), node)
            return self.hasura.root_field(node, request.variables, request.counted)
        input_type, payload_type, resolver = self.mutations[name]
        value = arguments(node, request.variables).get("input")
        return self._payload(payload_type, resolver(self._coerce(f"{input_type}!", value, "input"), request), node)

    # ---------------------------------------------------------------- checking
    def _validate(self, kind: str, node: FieldNode, request: Request) -> None:
        name = node.name.value
        root = "Query" if kind == "query" else "Mutation"
        if kind == "query" and name in ("hello",):
            return
        if kind == "query" and name == "api":
            self._validate_payload("api_info", node)
            return
        if kind == "query" and name == "get_task_run_info":
            self._validate_payload("task_run_info_payload", node)
            return
        if kind == "query" and self.hasura.is_root_field(name):
            try:
                self._validate_table_field(name, node)
            except HasuraError as err:
                raise RequestError([_error(str(err), node)]) from None
            return
        if kind == "mutation" and name in self.mutations:
            self._validate_payload(self.mutations[name][1], node)
            return
        raise RequestError([_error(f'Cannot query field "{name}" on type "{root}".', node)])

    def _validate_payload(self, payload: str, node: FieldNode) -> None:
        fields = PAYLOADS[payload]
        if node.selection_set is None:
            raise RequestError([_error(
                f'Field "{node.name.value}" of type "{payload}" must have a selection of subfields. '
                f'Did you mean "{node.name.value} {{ ... }}"?', node,
            )])
        for selection in node.selection_set.selections:
            assert isinstance(selection, FieldNode)
            name = selection.name.value
            if name == "__typename":
                continue
            if name not in fields:
                raise RequestError([_error(f'Cannot query field "{name}" on type "{payload}".', selection)])
            if fields[name] is not None:
                self._validate_payload(fields[name], selection)  # type: ignore[arg-type]

    def _validate_table_field(self, name: str, node: FieldNode) -> None:
        table = name[: -len("_by_pk")] if name.endswith("_by_pk") else name
        if table.endswith("_aggregate"):
            return  # aggregates are checked as they run
        self._validate_selection(table, node)

    def _validate_selection(self, table: str, node: FieldNode) -> None:
        if node.selection_set is None:
            raise HasuraError(f'field "{node.name.value}" of type "{table}" must have a selection of subfields')
        for selection in node.selection_set.selections:
            if not isinstance(selection, FieldNode):
                raise HasuraError("the emulator does not implement fragments")
            name = selection.name.value
            if name == "__typename" or name.endswith("_aggregate"):
                continue
            if (table, name) in schema.OBJECT_RELATIONSHIPS:
                self._validate_selection(schema.OBJECT_RELATIONSHIPS[(table, name)][0], selection)
            elif (table, name) in schema.ARRAY_RELATIONSHIPS:
                self._validate_selection(schema.ARRAY_RELATIONSHIPS[(table, name)][0], selection)
            elif name not in schema.COLUMNS[table]:
                raise HasuraError(f"field \"{name}\" not found in type: '{table}'")

    def _coerce(self, kind: str, value: Any, where: str) -> Any:
        """``value`` as input type ``kind``; a ValueError names the wrong field."""
        required = kind.endswith("!")
        base = kind[:-1] if required else kind
        if value is None:
            if required:
                raise ValueError(f"Field '{where}' of required type '{kind}' was not provided.")
            return None
        if base.startswith("["):
            if not isinstance(value, list):
                value = [value]
            return [self._coerce(base[1:-1], item, f"{where}[{i}]") for i, item in enumerate(value)]
        if base in INPUTS:
            if not isinstance(value, dict):
                raise ValueError(f"Expected type '{base}' to be an object at '{where}'.")
            unknown = set(value) - set(INPUTS[base])
            if unknown:
                raise ValueError(f"Field '{sorted(unknown)[0]}' is not defined by type '{base}'.")
            return {name: self._coerce(t, value.get(name), f"{where}.{name}") for name, t in INPUTS[base].items()
                    if name in value or t.endswith("!")}
        if base == "UUID":
            # server: src/prefect_server/graphql/scalars.py, uuid_value_parser
            try:
                return str(uuid.UUID(str(value)))
            except ValueError:
                raise ValueError(f"Variable '$input' got invalid value at '{where}'; Could not parse UUID: {value}") from None
        if base == "DateTime":
            # server: src/prefect_server/graphql/scalars.py, datetime_value_parser
            try:
                return pendulum.parse(str(value))
            except Exception:
                raise ValueError(f"Variable '$input' got invalid value at '{where}'; Expected type 'DateTime'") from None
        if base == "log_level":
            if value not in LOG_LEVELS:
                raise ValueError(f"Value '{value}' does not exist in 'log_level' enum.")
            return value
        if base == "Int" and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"Int cannot represent non-integer value: {value!r} (at '{where}')")
        if base in ("String",) and not isinstance(value, str):
            raise ValueError(f"String cannot represent a non string value: {value!r} (at '{where}')")
        if base == "Boolean" and not isinstance(value, bool):
            raise ValueError(f"Boolean cannot represent a non boolean value: {value!r} (at '{where}')")
        return value

    def _payload(self, payload: str, value: Any, node: FieldNode) -> Any:
        """The fields of a payload that ``node`` selects."""
        if value is None:
            return None
        if isinstance(value, list):
            return [self._payload(payload, item, node) for item in value]
        out: Dict[str, Any] = {}
        for selection in node.selection_set.selections if node.selection_set else ():
            assert isinstance(selection, FieldNode)
            key = (selection.alias or selection.name).value
            name = selection.name.value
            if name == "__typename":
                out[key] = payload
                continue
            nested = PAYLOADS[payload][name]
            out[key] = self._payload(nested, value.get(name), selection) if nested else render(value.get(name))
        return out

    # --------------------------------------------------------------- resolvers
    def _create_flow_run(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/runs.py, resolve_create_flow_run
        if not (data.get("flow_id") or data.get("version_group_id")):
            raise ValueError("A flow id or version group ID must be provided.")
        return {"id": self.rules.create_flow_run(
            flow_id=data.get("flow_id"), parameters=data.get("parameters"), context=data.get("context"),
            scheduled_start_time=data.get("scheduled_start_time"), flow_run_name=data.get("flow_run_name"),
            version_group_id=data.get("version_group_id"), idempotency_key=data.get("idempotency_key"),
            labels=data.get("labels"), run_config=data.get("run_config"),
        )}

    def _set_flow_run_states(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/states.py, resolve_set_flow_run_states
        agent_id = request.header("x-prefect-agent-id")
        results = []
        for state_input in data["states"]:
            state = self._state(state_input["state"])
            self.rules.set_flow_run_state(
                state_input.get("flow_run_id"), state, version=state_input.get("version"), agent_id=agent_id
            )
            results.append({"id": state_input.get("flow_run_id"), "status": "SUCCESS", "message": None})
        return {"states": results}

    def _set_task_run_states(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/states.py, resolve_set_task_run_states (Server
        # has no task concurrency limits, so the status is never QUEUED)
        results = []
        for state_input in data["states"]:
            state = self._state(state_input["state"])
            self.rules.set_task_run_state(
                state_input.get("task_run_id"), state, version=state_input.get("version"),
                flow_run_version=state_input.get("flow_run_version"),
            )
            results.append({"id": state_input.get("task_run_id"), "status": "SUCCESS", "message": None})
        return {"states": results}

    @staticmethod
    def _state(serialized: Any) -> Any:
        # server: src/prefect_server/graphql/states.py, check_size_and_set_state
        if sys.getsizeof(json.dumps(serialized)) > 1000000:
            raise ValueError("State payload is too large.")
        try:
            return _STATES.load(serialized)
        except Exception as err:  # marshmallow's errors
            raise ValueError(str(err)) from None

    def _cancel_flow_run(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/states.py, resolve_cancel_flow_run
        return {"state": self.rules.cancel_flow_run(data["flow_run_id"])["state"]}

    def _get_or_create_task_run_info(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/runs.py, resolve_get_or_create_task_run_info
        return self.rules.get_or_create_task_run_info(data["flow_run_id"], data["task_id"], data.get("map_index"))

    def _get_or_create_task_run(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/runs.py, resolve_get_or_create_task_run
        info = self.rules.get_or_create_task_run_info(data["flow_run_id"], data["task_id"], data.get("map_index"))
        return {"id": info["id"]}

    def _flow_heartbeat(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/runs.py, resolve_update_flow_run_heartbeat: the
        # update runs in a background task, so the answer is success whatever happens
        try:
            self.rules.update_flow_run_heartbeat(data["flow_run_id"])
        except ValueError:
            pass
        return {"success": True}

    def _task_heartbeat(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/runs.py, resolve_update_task_run_heartbeat
        try:
            self.rules.update_task_run_heartbeat(data["task_run_id"])
        except ValueError:
            pass
        return {"success": True}

    def _get_runs_in_queue(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/runs.py, resolve_get_runs_in_queue (the agent
        # id comes from the X-PREFECT-AGENT-ID header)
        labels = sorted(data.get("labels") or [])
        return {"flow_run_ids": self.rules.get_runs_in_queue(
            tenant_id=data["tenant_id"], before=data.get("before"), labels=labels,
            agent_id=request.header("x-prefect-agent-id"),
        )}

    def _register_agent(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/agents.py, resolve_register_agent (the core
        # version comes from the X-PREFECT-CORE-VERSION header)
        return {"id": self.rules.register_agent(
            tenant_id=data.get("tenant_id"), labels=data.get("labels"), agent_config_id=data.get("agent_config_id"),
            type=data["type"], name=data.get("name"), core_version=request.header("x-prefect-core-version"),
        )}

    def _write_run_logs(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/logs.py, resolve_write_run_logs
        self.rules.create_logs([
            dict(flow_run_id=log.get("flow_run_id"), task_run_id=log.get("task_run_id"),
                 timestamp=log.get("timestamp"), message=log.get("message"), name=log.get("name"),
                 level=log.get("level"), info=log.get("info"))
            for log in data["logs"]
        ])
        return {"success": True}

    def _create_project(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/projects.py, resolve_create_project
        return {"id": self.rules.create_project(data["tenant_id"], data["name"], data.get("description"))}

    def _create_flow(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/flows.py, resolve_create_flow
        set_active = data.get("set_schedule_active")
        return {"id": self.rules.create_flow(
            serialized_flow=data["serialized_flow"], project_id=data["project_id"],
            version_group_id=data.get("version_group_id"), set_schedule_active=True if set_active is None else set_active,
            description=data.get("description"), idempotency_key=data.get("idempotency_key"),
        )}

    def _create_flow_compressed(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/flows.py, resolve_create_flow_from_compressed_string
        try:
            serialized = decompress(data["serialized_flow"])
        except Exception:
            raise TypeError("Unable to decompress serialized flow") from None
        return self._create_flow({**data, "serialized_flow": serialized}, request)

    def _register_tasks(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/flows.py, resolve_register_tasks
        self.rules.register_tasks(data["flow_id"], data["serialized_tasks"])
        return {"success": True}

    def _register_edges(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/graphql/flows.py, resolve_register_edges
        self.rules.register_edges(data["flow_id"], data["serialized_edges"])
        return {"success": True}

    def _set_flow_run_name(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/api/runs.py, set_flow_run_name
        if not data["name"]:
            raise ValueError("Invalid name")
        return {"success": self.rules.store.update("flow_run", data["flow_run_id"], name=data["name"]) is not None}

    def _set_task_run_name(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/api/runs.py, set_task_run_name
        if not data["name"]:
            raise ValueError("Invalid name")
        return {"success": self.rules.store.update("task_run", data["task_run_id"], name=data["name"]) is not None}

    def _set_flow_run_labels(self, data: dict, request: Request) -> dict:
        # server: src/prefect_server/api/runs.py, set_flow_run_labels
        labels = sorted(data["labels"])
        return {"success": self.rules.store.update("flow_run", data["flow_run_id"], labels=labels) is not None}
