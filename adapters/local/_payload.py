"""Turning flows into bytes a worker process can load, once per flow.

A flow is pickled with cloudpickle the first time it is submitted and the bytes
are kept for as long as the flow object lives, keyed by the object and a cheap
fingerprint of its shape (name, number of tasks and edges), so that adding a
task or an edge after the first run is noticed. Functions of modules the worker
could not import the same way (the caller's ``__main__``, a test module loaded
by path, a module whose file is not on ``sys.path``) are pickled by value.
"""

from __future__ import annotations

import importlib.machinery
import itertools
import os
import pickle
import sys
import threading
import types
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import cloudpickle

# cloudpickle's by-value registry is process-wide: registrations made for one
# dumps() are undone right after it, under this lock.
_BY_VALUE_LOCK = threading.Lock()

_NEVER_BY_VALUE = ("builtins", "prefect", "lume_scheduling", "__main__")


class UnsendableFlowError(TypeError):
    """A flow (or its parameters) cannot be pickled for a worker process."""


@dataclass(frozen=True)
class FlowPayload:
    """A pickled flow and the token workers cache it under."""

    token: int
    data: bytes


@dataclass
class _Entry:
    ref: "weakref.ref[Any]"
    fingerprint: Tuple[Any, ...]
    payload: FlowPayload


def _fingerprint(flow: Any) -> Tuple[Any, ...]:
    return (flow.name, len(flow.tasks), len(flow.edges))


def _candidate_modules(flow: Any) -> Iterable[str]:
    yield type(flow).__module__
    for handler in getattr(flow, "state_handlers", None) or ():
        yield getattr(handler, "__module__", "") or ""
    for task in flow.tasks:
        yield type(task).__module__
        run = getattr(task, "run", None)
        yield getattr(run, "__module__", "") or ""
        for handler in getattr(task, "state_handlers", None) or ():
            yield getattr(handler, "__module__", "") or ""


def _importable_as_is(module: types.ModuleType, search_path: List[str]) -> bool:
    """Whether a fresh interpreter with ``search_path`` would import ``module``
    from the same file."""
    location = getattr(module, "__file__", None)
    if not location:
        return True  # built-in or namespace: nothing to copy by value anyway
    name = module.__name__
    top = name.partition(".")[0]
    try:
        spec = importlib.machinery.PathFinder.find_spec(top, search_path)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if "." not in name:
        return spec.origin is not None and os.path.realpath(spec.origin) == os.path.realpath(location)
    roots = list(spec.submodule_search_locations or ())
    real = os.path.realpath(location)
    return any(real.startswith(os.path.realpath(root) + os.sep) for root in roots)


def modules_by_value(flow: Any, search_path: List[str]) -> List[types.ModuleType]:
    """Modules whose functions the flow needs but a worker could not import."""
    found: Set[str] = set()
    result: List[types.ModuleType] = []
    for name in _candidate_modules(flow):
        if not name or name in found or name.partition(".")[0] in _NEVER_BY_VALUE:
            continue
        found.add(name)
        module = sys.modules.get(name)
        if module is not None and not _importable_as_is(module, search_path):
            result.append(module)
    return result


def dumps_flow(flow: Any, search_path: List[str]) -> bytes:
    """Pickle a flow for a worker process.

    Raises:
        UnsendableFlowError: Something in the flow cannot be pickled.
    """
    modules = modules_by_value(flow, search_path)
    try:
        with _BY_VALUE_LOCK:
            registered = []
            try:
                for module in modules:
                    if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
                        cloudpickle.register_pickle_by_value(module)
                        registered.append(module)
                return cloudpickle.dumps(flow, protocol=pickle.HIGHEST_PROTOCOL)
            finally:
                for module in registered:
                    cloudpickle.unregister_pickle_by_value(module)
    except Exception as err:  # pickling raises TypeError, PicklingError, AttributeError...
        raise UnsendableFlowError(
            f"flow {getattr(flow, 'name', flow)!r} cannot be sent to a worker process: "
            f"{type(err).__name__}: {err}. A task or its function holds something that "
            "cannot be pickled (a lock, a socket, an open file...): create it inside the "
            "task, or run the flow in this process with LocalBackend(isolated=False)"
        ) from err


def dumps_parameters(parameters: Dict[str, Any]) -> bytes:
    """Pickle flow parameters for a worker process.

    Raises:
        UnsendableFlowError: A parameter value cannot be pickled.
    """
    try:
        return pickle.dumps(parameters, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - retry with cloudpickle (lambdas, local classes)
        pass
    try:
        return cloudpickle.dumps(parameters, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:
        raise UnsendableFlowError(
            f"parameters cannot be sent to a worker process: {type(err).__name__}: {err} "
            "(pass picklable values, or use LocalBackend(isolated=False))"
        ) from err


class FlowPayloads:
    """Pickled flows by flow object; each flow is pickled once while unchanged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: Dict[int, _Entry] = {}
        self._tokens = itertools.count(1)

    def get(self, flow: Any, search_path: List[str]) -> FlowPayload:
        """The payload of ``flow``, pickling it if it is new or has changed shape.

        Raises:
            UnsendableFlowError: The flow cannot be pickled.
        """
        key = id(flow)
        fingerprint = _fingerprint(flow)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.ref() is flow and entry.fingerprint == fingerprint:
                return entry.payload
        data = dumps_flow(flow, search_path)
        payload = FlowPayload(next(self._tokens), data)
        entries = self._entries

        def forget(_ref: Any, key: int = key) -> None:
            current = entries.get(key)
            if current is not None and current.ref is _ref:
                entries.pop(key, None)

        with self._lock:
            self._entries[key] = _Entry(weakref.ref(flow, forget), fingerprint, payload)
        return payload

    def __len__(self) -> int:
        return len(self._entries)

    def pickled(self, flow: Any) -> Optional[FlowPayload]:
        """The cached payload of ``flow`` if there is one (for tests and stats)."""
        entry = self._entries.get(id(flow))
        return entry.payload if entry is not None and entry.ref() is flow else None
