"""The query side of the API: Hasura's generated GraphQL over the tables of `schema`.

Table queries (``flow_run(where:, order_by:, limit:, offset:)``), ``<table>_by_pk``,
``<table>_aggregate``, object and array relationships with their own arguments,
and the boolean expressions Hasura evaluates in Postgres (``_eq``, ``_in``,
``_lte``, ``_is_null``, ``_contains``, ``_and`` / ``_or`` / ``_not``, conditions on
relationships: an array relationship matches when one related row does).

# server: services/hasura/migrations/metadata.yaml (the tables and relationships tracked)
# server: docker/infrastructure/docker-compose.yml (HASURA_GRAPHQL_V1_BOOLEAN_NULL_COLLAPSE:
#         a comparison with null is no condition at all)
"""

from __future__ import annotations

import copy
import datetime
import re
import uuid
from typing import Any, Dict, List, Optional, Tuple

import pendulum
from graphql import FieldNode

from . import schema
from .store import Store


class HasuraError(Exception):
    """An error Hasura reports for a query (bad input, unknown field)."""


def arguments(field: FieldNode, variables: Dict[str, Any]) -> Dict[str, Any]:
    """A field's arguments, with variables substituted."""
    from graphql.utilities import value_from_ast_untyped

    return {a.name.value: value_from_ast_untyped(a.value, variables) for a in field.arguments or ()}


def render(value: Any) -> Any:
    """A stored value as JSON (timestamps as ISO strings, as Postgres renders them)."""
    if isinstance(value, datetime.datetime):
        return pendulum.instance(value).in_timezone("UTC").isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    return copy.deepcopy(value)


def coerce(kind: str, value: Any) -> Any:
    """An input value as the column type ``kind`` compares it (Postgres' casts)."""
    if value is None:
        return None
    if kind == schema.UUID:
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise HasuraError(f'invalid input syntax for type uuid: "{value}"') from None
    if kind == schema.TIME:
        if isinstance(value, datetime.datetime):
            return pendulum.instance(value)
        try:
            return pendulum.parse(str(value))
        except Exception:
            raise HasuraError(f'invalid input syntax for type timestamp with time zone: "{value}"') from None
    if kind == schema.INT:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise HasuraError(f'invalid input syntax for type integer: "{value}"') from None
    return value


def _contains(container: Any, contained: Any) -> bool:
    # jsonb @> : objects contain sub-objects, arrays contain their elements
    if isinstance(container, dict) and isinstance(contained, dict):
        return all(k in container and _contains(container[k], v) for k, v in contained.items())
    if isinstance(container, list):
        items = contained if isinstance(contained, list) else [contained]
        return all(any(_contains(c, item) for c in container) for item in items)
    return container == contained


def _like(pattern: str, ignore_case: bool) -> "re.Pattern[str]":
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(f"^{regex}$", re.S | (re.I if ignore_case else 0))


class Hasura:
    """Answers Hasura's query fields from a `Store`.

    Args:
        store: The tables.

    The ``counter`` the query methods take gets, per table, the number of rows
    projected (the emulator counts task run rows per request with it).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ root fields
    def is_root_field(self, name: str) -> bool:
        table = name[: -len("_by_pk")] if name.endswith("_by_pk") else name
        table = table[: -len("_aggregate")] if table.endswith("_aggregate") else table
        return table in schema.COLUMNS

    def root_field(self, field: FieldNode, variables: Dict[str, Any], counter: Dict[str, int]) -> Any:
        name = field.name.value
        args = arguments(field, variables)
        with self.store.lock:
            if name.endswith("_by_pk"):
                table = name[: -len("_by_pk")]
                if "id" not in args:
                    raise HasuraError(f'missing required field "id" for {name}')
                row = self.store.get(table, coerce(schema.UUID, args["id"]))
                return None if row is None else self.project(table, row, field, variables, counter)
            if name.endswith("_aggregate"):
                table = name[: -len("_aggregate")]
                return self._aggregate(table, self.select(table, self.store.rows(table), args), field, variables, counter)
            rows = self.select(name, self._candidates(name, args.get("where") or {}), args)
            return self._project_rows(name, rows, field, variables, counter)

    def _candidates(self, table: str, where: Dict[str, Any]) -> List[dict]:
        """The rows ``where`` can match: through an index when it asks for one
        foreign key's value (``{flow_run_id: {_eq: ...}}``), else all of them."""
        for column, condition in where.items():
            if (isinstance(condition, dict) and condition.get("_eq") is not None
                    and schema.COLUMNS[table].get(column) == schema.UUID and column != "id"):
                return self.store.where(table, **{column: coerce(schema.UUID, condition["_eq"])})
        return self.store.rows(table)

    # ------------------------------------------------------------- selection
    def select(self, table: str, rows: List[dict], args: Dict[str, Any]) -> List[dict]:
        if args.get("distinct_on") is not None:
            raise HasuraError("the emulator does not implement distinct_on")
        where = args.get("where") or {}
        chosen = [row for row in rows if self.matches(table, row, where)]
        for column, direction in reversed(self._orders(table, args.get("order_by"))):
            descending = str(direction).startswith("desc")
            nulls_first = "nulls_first" in str(direction) or (descending and "nulls_last" not in str(direction))
            present = [r for r in chosen if self._order_value(table, r, column) is not None]
            absent = [r for r in chosen if self._order_value(table, r, column) is None]
            present.sort(key=lambda r: self._order_value(table, r, column), reverse=descending)
            chosen = absent + present if nulls_first else present + absent
        offset = int(args.get("offset") or 0)
        limit = args.get("limit")
        return chosen[offset:] if limit is None else chosen[offset : offset + int(limit)]

    def _orders(self, table: str, order_by: Any) -> List[Tuple[Tuple[str, ...], str]]:
        """``[(column path, direction)]`` from an ``order_by`` argument (a mapping or a list)."""
        flat: List[Tuple[Tuple[str, ...], str]] = []

        def walk(current: str, spec: Dict[str, Any], path: Tuple[str, ...]) -> None:
            for key, value in spec.items():
                if isinstance(value, dict):
                    if (current, key) not in schema.OBJECT_RELATIONSHIPS:
                        raise HasuraError(f"field \"{key}\" not found in type: '{current}_order_by'")
                    walk(schema.OBJECT_RELATIONSHIPS[(current, key)][0], value, path + (key,))
                else:
                    if key not in schema.COLUMNS[current]:
                        raise HasuraError(f"field \"{key}\" not found in type: '{current}_order_by'")
                    flat.append((path + (key,), str(value)))

        for spec in order_by if isinstance(order_by, list) else [order_by] if order_by else []:
            walk(table, spec, ())
        return flat

    def _order_value(self, table: str, row: Optional[dict], path: Tuple[str, ...]) -> Any:
        for step in path[:-1]:
            if row is None:
                return None
            target, column = schema.OBJECT_RELATIONSHIPS[(table, step)]
            row, table = self.store.get(target, row.get(column)), target
        return None if row is None else row.get(path[-1])

    def matches(self, table: str, row: dict, where: Dict[str, Any]) -> bool:
        """Whether ``row`` satisfies the boolean expression ``where``."""
        for key, condition in where.items():
            if condition is None:
                continue  # null collapses to no condition
            if key == "_and":
                if not all(self.matches(table, row, part) for part in condition):
                    return False
            elif key == "_or":
                if condition and not any(self.matches(table, row, part) for part in condition):
                    return False
            elif key == "_not":
                if self.matches(table, row, condition):
                    return False
            elif (table, key) in schema.OBJECT_RELATIONSHIPS:
                target, column = schema.OBJECT_RELATIONSHIPS[(table, key)]
                related = self.store.get(target, row.get(column))
                if related is None or not self.matches(target, related, condition):
                    return False
            elif (table, key) in schema.ARRAY_RELATIONSHIPS:
                target, column = schema.ARRAY_RELATIONSHIPS[(table, key)]
                related = self.store.where(target, **{column: row["id"]})
                if not any(self.matches(target, r, condition) for r in related):
                    return False
            elif key in schema.COLUMNS[table]:
                if not self._compare(schema.COLUMNS[table][key], row.get(key), condition):
                    return False
            else:
                raise HasuraError(f"field \"{key}\" not found in type: '{table}_bool_exp'")
        return True

    @staticmethod
    def _compare(kind: str, value: Any, condition: Dict[str, Any]) -> bool:
        for operator, expected in condition.items():
            if expected is None and operator != "_is_null":
                continue  # null collapses to no condition
            if operator == "_is_null":
                if expected is not None and (value is None) != bool(expected):
                    return False
                continue
            if operator in ("_in", "_nin"):
                expected = [coerce(kind, item) for item in expected]
            elif operator not in ("_contains", "_has_key", "_like", "_ilike", "_nlike", "_nilike"):
                expected = coerce(kind, expected)
            if value is None:
                return False  # SQL: a comparison with NULL is never true
            if operator == "_eq":
                ok = value == expected
            elif operator == "_neq":
                ok = value != expected
            elif operator == "_in":
                ok = value in expected
            elif operator == "_nin":
                ok = value not in expected
            elif operator == "_gt":
                ok = value > expected
            elif operator == "_gte":
                ok = value >= expected
            elif operator == "_lt":
                ok = value < expected
            elif operator == "_lte":
                ok = value <= expected
            elif operator in ("_like", "_ilike", "_nlike", "_nilike"):
                found = bool(_like(str(expected), "ilike" in operator).match(str(value)))
                ok = found if operator in ("_like", "_ilike") else not found
            elif operator == "_contains":
                ok = _contains(value, expected)
            elif operator == "_has_key":
                ok = isinstance(value, dict) and expected in value
            else:
                raise HasuraError(f"the emulator does not implement the operator {operator}")
            if not ok:
                return False
        return True

    # ------------------------------------------------------------ projection
    def _project_rows(
        self, table: str, rows: List[dict], field: FieldNode, variables: Dict[str, Any], counter: Dict[str, int]
    ) -> List[Any]:
        counter[table] = counter.get(table, 0) + len(rows)
        return [self.project(table, row, field, variables, counter) for row in rows]

    def project(
        self, table: str, row: dict, field: FieldNode, variables: Dict[str, Any], counter: Dict[str, int]
    ) -> Dict[str, Any]:
        """The fields of ``row`` that ``field`` selects, relationships included."""
        if field.selection_set is None:
            raise HasuraError(f'field "{field.name.value}" of type "{table}" must have a selection of subfields')
        out: Dict[str, Any] = {}
        for selection in field.selection_set.selections:
            if not isinstance(selection, FieldNode):
                raise HasuraError("the emulator does not implement fragments")
            name = selection.name.value
            key = (selection.alias or selection.name).value
            args = arguments(selection, variables)
            if name == "__typename":
                out[key] = table
            elif (table, name) in schema.OBJECT_RELATIONSHIPS:
                target, column = schema.OBJECT_RELATIONSHIPS[(table, name)]
                related = self.store.get(target, row.get(column))
                out[key] = None if related is None else self.project(target, related, selection, variables, counter)
            elif (table, name) in schema.ARRAY_RELATIONSHIPS:
                target, column = schema.ARRAY_RELATIONSHIPS[(table, name)]
                related = self.store.where(target, **{column: row["id"]})
                out[key] = self._project_rows(target, self.select(target, related, args), selection, variables, counter)
            elif name.endswith("_aggregate") and (table, name[: -len("_aggregate")]) in schema.ARRAY_RELATIONSHIPS:
                target, column = schema.ARRAY_RELATIONSHIPS[(table, name[: -len("_aggregate")])]
                related = self.store.where(target, **{column: row["id"]})
                out[key] = self._aggregate(target, self.select(target, related, args), selection, variables, counter)
            elif name in schema.COLUMNS[table]:
                if selection.selection_set is not None:
                    raise HasuraError(f'field "{name}" must not have a selection since type is a scalar')
                out[key] = render(row.get(name))
            else:
                raise HasuraError(f"field \"{name}\" not found in type: '{table}'")
        return out

    def _aggregate(
        self, table: str, rows: List[dict], field: FieldNode, variables: Dict[str, Any], counter: Dict[str, int]
    ) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for selection in (field.selection_set.selections if field.selection_set else ()):
            assert isinstance(selection, FieldNode)
            key = (selection.alias or selection.name).value
            if selection.name.value == "nodes":
                out[key] = self._project_rows(table, rows, selection, variables, counter)
            elif selection.name.value == "aggregate":
                values: Dict[str, Any] = {}
                for part in (selection.selection_set.selections if selection.selection_set else ()):
                    assert isinstance(part, FieldNode)
                    part_key = (part.alias or part.name).value
                    if part.name.value == "count":
                        values[part_key] = len(rows)
                    elif part.name.value in ("max", "min"):
                        pick = max if part.name.value == "max" else min
                        columns = {}
                        for column_node in (part.selection_set.selections if part.selection_set else ()):
                            assert isinstance(column_node, FieldNode)
                            present = [r[column_node.name.value] for r in rows if r.get(column_node.name.value) is not None]
                            columns[(column_node.alias or column_node.name).value] = render(pick(present)) if present else None
                        values[part_key] = columns
                    else:
                        raise HasuraError(f"the emulator does not implement the aggregate {part.name.value}")
                out[key] = values
            else:
                raise HasuraError(f"field \"{selection.name.value}\" not found in type: '{table}_aggregate'")
        return out
