"""Turning flows and parameters into bytes a worker process can load.

A flow is pickled with cloudpickle on every submit and known by the digest of
those bytes: workers keep the bytes of the flows they were sent by digest, so
a flow goes over a pipe once per worker while it is unchanged, and any change
to what would be sent (a parameter default, a task's settings, an edge, the
flow's own settings) is a new digest, never a stale flow. Functions of modules
the worker could not import the same way (the caller's ``__main__``, a test
module loaded by path, a module whose file is not on ``sys.path``) are pickled
by value, and their code keeps its file name (cloudpickle alone writes
``<dynamic-code>``), so tracebacks from a worker name the user's file.
"""

from __future__ import annotations

import copyreg
import hashlib
import importlib.machinery
import io
import os
import pickle
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Set, Tuple

import cloudpickle

# cloudpickle's by-value registry is process-wide: registrations made for one
# dumps() are undone right after it, under this lock.
_BY_VALUE_LOCK = threading.Lock()

_NEVER_BY_VALUE = ("builtins", "prefect", "lume_scheduling", "__main__")


class UnsendableFlowError(TypeError):
    """A flow (or its parameters) cannot be pickled for a worker process."""


@dataclass(frozen=True)
class FlowPayload:
    """A pickled flow and the digest workers cache it under."""

    digest: bytes
    data: bytes = b""


# cloudpickle (3.1 and later) writes this instead of a code object's file name.
_DYNAMIC_CODE = "<dynamic-code>"
_CLOUDPICKLE_CODE_REDUCE = cloudpickle.Pickler.dispatch_table[types.CodeType]


def _code_reduce(code: types.CodeType) -> Tuple[Any, Tuple[Any, ...]]:
    """cloudpickle's reduction of a code object, with its real file name back."""
    constructor, args = _CLOUDPICKLE_CODE_REDUCE(code)
    for index, arg in enumerate(args):
        if isinstance(arg, str) and arg == _DYNAMIC_CODE:
            return constructor, args[:index] + (code.co_filename,) + args[index + 1:]
    return constructor, args


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, keeping the file name of code pickled by value.

    Its dispatch table is a plain dict: the pickler looks every object's type
    up in it, and cloudpickle's ChainMap answers each lookup in Python.
    """

    dispatch_table: Dict[Any, Any] = {}
    _copyreg_size = -1


def _refresh_dispatch_table() -> None:
    """Rebuild the flat table when copyreg gained registrations."""
    if _Pickler._copyreg_size != len(copyreg.dispatch_table):
        table = dict(cloudpickle.Pickler.dispatch_table)
        table[types.CodeType] = _code_reduce
        _Pickler.dispatch_table = table
        _Pickler._copyreg_size = len(copyreg.dispatch_table)


def dumps(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)``, except that code keeps its file name.

    Raises:
        Whatever pickling ``obj`` raises (TypeError, PicklingError, ...).
    """
    _refresh_dispatch_table()
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


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
        if spec.origin is None:
            return False
        # The same path is the same file; realpath (a stat per part of the path) only when not.
        return spec.origin == location or os.path.realpath(spec.origin) == os.path.realpath(location)
    roots = list(spec.submodule_search_locations or ())
    real = os.path.realpath(location)
    return any(real.startswith(os.path.realpath(root) + os.sep) for root in roots)


def modules_by_value(flow: Any, search_path: List[str]) -> List[types.ModuleType]:
    """Modules whose functions the flow needs but a worker could not import."""
    return _not_importable(_candidate_modules(flow), search_path)


def _dumps_by_value(obj: Any, modules: List[types.ModuleType]) -> bytes:
    """cloudpickle ``obj`` with ``modules`` pickled by value for this one call."""
    if not modules:
        # Nothing to register: no need to wait for another thread's registrations
        # (at worst they make this pickle carry a module by value: still loadable).
        return dumps(obj)
    with _BY_VALUE_LOCK:
        registered = []
        try:
            for module in modules:
                if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
                    cloudpickle.register_pickle_by_value(module)
                    registered.append(module)
            return dumps(obj)
        finally:
            for module in registered:
                cloudpickle.unregister_pickle_by_value(module)


def _not_importable(names: Iterable[str], search_path: List[str]) -> List[types.ModuleType]:
    found: Set[str] = set()
    result: List[types.ModuleType] = []
    for name in names:
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
    try:
        return _dumps_by_value(flow, modules_by_value(flow, search_path))
    except Exception as err:  # pickling raises TypeError, PicklingError, AttributeError...
        raise UnsendableFlowError(
            f"flow {getattr(flow, 'name', flow)!r} cannot be sent to a worker process: "
            f"{type(err).__name__}: {err}. A task or its function holds something that "
            "cannot be pickled (a lock, a socket, an open file...): create it inside the "
            "task, or run the flow in this process with LocalBackend(isolated=False)"
        ) from err


def _value_modules(parameters: Dict[str, Any]) -> Iterable[str]:
    for value in parameters.values():
        yield type(value).__module__
        if isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                yield type(item).__module__
        elif isinstance(value, dict):
            for item in value.values():
                yield type(item).__module__


def dumps_parameters(parameters: Dict[str, Any], search_path: List[str]) -> bytes:
    """Pickle flow parameters for a worker process, with cloudpickle; classes of
    values (and of the items of list, tuple, set and dict values) from modules a
    worker cannot import go by value.

    Raises:
        UnsendableFlowError: A parameter value cannot be pickled.
    """
    try:
        return _dumps_by_value(parameters, _not_importable(_value_modules(parameters), search_path))
    except Exception as err:
        raise UnsendableFlowError(
            f"parameters cannot be sent to a worker process: {type(err).__name__}: {err} "
            "(pass picklable values, or use LocalBackend(isolated=False))"
        ) from err


def flow_payload(flow: Any, search_path: List[str]) -> FlowPayload:
    """The flow's bytes for a worker and their digest (see the module docstring).

    Raises:
        UnsendableFlowError: The flow cannot be pickled.
    """
    data = dumps_flow(flow, search_path)
    return FlowPayload(hashlib.blake2b(data, digest_size=16).digest(), data)
