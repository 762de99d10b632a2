"""Prefect's context entry without re-merging a config that is already in force.

Used in the local backend's worker processes only: never in the caller's
process, never for ``LocalBackend(isolated=False)``. `install` is called once by
a worker at start-up, in its main thread.

Why: prefect 1.4.1's ``Context.__call__`` (``prefect/utilities/context.py``)
deep-merges the config passed to it with the config in force on every entry
(``merge_dicts``, which copies each mapping of the config with
``Config.copy``). A 1-task ``flow.run()`` enters the context 14 times, 7 of them
with the config it is already running under, and those copies are about 95 % of
its time.

What the fast path changes, in the worker's main thread only: when the config
given *is* (identity, not equality) the config in force, and that config is the
worker's base config (``prefect.context.config`` as it was at start-up) with
every mapping in it holding exactly what it held at start-up (keys and values
compared by identity), the entry keeps that config object instead of a fresh
copy of it. Prefect's copy is equal to it, item for item, down to the same leaf
objects: only the identity of the mapping objects differs (inside such an
entry, ``prefect.context.config`` is the same object as outside it).

What it keeps: every other entry (a different config, an equal but distinct
one, a partial override such as ``prefect.context(config={...})``, a base
config that has been changed, any thread but the main one) runs Prefect's own
code path, ``merge_dicts`` included. A change made to the config inside a fast
entry (``prefect.context.config.x = ...`` in a task) would, in Prefect, have
gone to the entry's private copy and vanished at its exit; here it is undone
in place at that exit, so code after it sees what Prefect would show. Leaf
values (a list in the config) are shared by Prefect's copies too and are not
guarded, as in Prefect.

One more saving, with the same result: on exit (and on entry) a `Context`'s
own dict is cleared and refilled directly, which is what Prefect's
``self.clear()`` and ``self.update(...)`` do one key at a time through
``DotDict``'s methods.

And one outside the context: ``Flow._run`` (``prefect/core/flow.py``) calls
``time.sleep(naptime)`` before and after each pass of a run, with a naptime
of 0 when there is nothing to wait for (every run that has no scheduled start
and no task waiting for a retry). Such a sleep asks the kernel for a timer
that has already expired, which costs 20-70 us of a 1-task run's ~1 ms in a
worker. In worker processes the ``time`` that module sees is `_FlowTime`:
``time`` itself, except that ``sleep(0)`` returns at once; every other
duration (a retry's wait, a scheduled start) sleeps as before.

Written against prefect 1.4.1 exactly: `install` compares digests of the
source of ``Context.__call__``, ``merge_dicts``, ``Config.copy``, the
``DotDict`` item methods and ``Flow._run`` with the ones below, checks that ``Context`` inherits
its mapping methods unchanged, and leaves the fast path off (the worker says
why, and the backend logs it once) if anything differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import textwrap
import threading
import time
from dataclasses import dataclass
from itertools import chain
from operator import is_
from typing import Any, Callable, Iterator, List, MutableMapping, Optional, Tuple

from prefect.configuration import Config
from prefect.core import flow as prefect_flow
from prefect.utilities import context as prefect_context
from prefect.utilities.collections import DotDict, merge_dicts

PREFECT_VERSION = "1.4.1"

# sha256 of the dedented source of each function in prefect 1.4.1.
EXPECTED_SOURCES = {
    "prefect.utilities.context.Context.__call__": "11a67dfd41a76712b09242c4f0626a28ef6731e3cd12e4174e660a0d21311d6f",
    "prefect.utilities.collections.merge_dicts": "fba93e78683c03822317a8974d0fcb5737d4ff66fb8ab63bf7d521097c4525e3",
    "prefect.configuration.Config.copy": "956a627e5864bce980c16d87b881751632c1a15393526e1abd257cffacfc0de4",
    "prefect.utilities.collections.DotDict.__getitem__": "174068b1e908c40c9ce56c1c8a0667c59a8ba89bae688e9ed5702c93b215418f",
    "prefect.utilities.collections.DotDict.__setitem__": "66ad71b40ac66716bcc0988352a295b72ebf0bd625d11fb9bb6a0192776eaaa3",
    "prefect.utilities.collections.DotDict.__delitem__": "85de4e09d7e48031413c681214e0028cf3d6948af09f2fe3e970c579cabd3988",
    "prefect.utilities.collections.DotDict.__iter__": "36e17cf6301f95ec39cfdac6404b04e226f1e941b6682ca42b13414fdddc69aa",
    "prefect.core.flow.Flow._run": "efdfbf544592c5cfd3bf9cda38fc427afa51a008c9ad17f33b8911f6778a3a31",
}

# Methods the context must inherit unchanged for its own dict to be cleared and
# refilled directly (what they do one key at a time).
_MAPPING_METHODS = (
    ("clear", MutableMapping.clear),
    ("update", MutableMapping.update),
    ("popitem", MutableMapping.popitem),
    ("__getitem__", DotDict.__getitem__),
    ("__setitem__", DotDict.__setitem__),
    ("__delitem__", DotDict.__delitem__),
    ("__iter__", DotDict.__iter__),
)


def _prefect_functions() -> List[Tuple[str, Any]]:
    call = prefect_context.Context.__call__
    return [
        ("prefect.utilities.context.Context.__call__", getattr(call, "__wrapped__", call)),
        ("prefect.utilities.collections.merge_dicts", merge_dicts),
        ("prefect.configuration.Config.copy", Config.copy),
        ("prefect.utilities.collections.DotDict.__getitem__", DotDict.__getitem__),
        ("prefect.utilities.collections.DotDict.__setitem__", DotDict.__setitem__),
        ("prefect.utilities.collections.DotDict.__delitem__", DotDict.__delitem__),
        ("prefect.utilities.collections.DotDict.__iter__", DotDict.__iter__),
        ("prefect.core.flow.Flow._run", prefect_flow.Flow._run),
    ]


def source_digest(function: Any) -> str:
    """sha256 of a function's dedented source.

    Raises:
        OSError, TypeError: Its source cannot be read.
    """
    return hashlib.sha256(textwrap.dedent(inspect.getsource(function)).encode()).hexdigest()


def mismatch() -> Optional[str]:
    """Why prefect's functions are not the ones the fast path was written
    against, or None when they all are."""
    for name, function in _prefect_functions():
        try:
            digest = source_digest(function)
        except (OSError, TypeError) as err:
            return f"the source of {name} cannot be read ({err})"
        if digest != EXPECTED_SOURCES[name]:
            return f"{name} is not the one of prefect {PREFECT_VERSION} it was written against"
    for name, method in _MAPPING_METHODS:
        if getattr(prefect_context.Context, name, None) is not method:
            return f"prefect.utilities.context.Context.{name} is not the one it inherits in prefect {PREFECT_VERSION}"
    return None


class ConfigSnapshot:
    """Every mapping of a config tree and what it held, to tell (by identity)
    whether anything in it was set, replaced or deleted since, and to undo that.

    `intact` runs on every fast context entry and exit, so it is a few passes
    of C-level iteration over all mappings at once, not Python code per mapping.

    Args:
        root: The config (a ``Config``, or any tree of dicts).

    Raises:
        TypeError: The tree holds a mapping that is not a dict (the snapshot
            could not read or restore it the way Prefect copies it).
    """

    def __init__(self, root: dict) -> None:
        self.root = root
        nodes: List[dict] = []
        self._collect(root, nodes, set())
        self._nodes = tuple(nodes)
        self._items = tuple((tuple(dict.keys(node)), tuple(dict.values(node))) for node in nodes)
        self._lengths = tuple(map(len, nodes))
        self._keys = tuple(chain.from_iterable(keys for keys, _ in self._items))
        self._values = tuple(chain.from_iterable(values for _, values in self._items))
        # Live views of each mapping: reading them costs no call per mapping.
        self._key_views = tuple(dict.keys(node) for node in nodes)
        self._value_views = tuple(dict.values(node) for node in nodes)

    def _collect(self, node: dict, nodes: List[dict], seen: set) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        nodes.append(node)
        for value in dict.values(node):
            if isinstance(value, dict):
                self._collect(value, nodes, seen)
            elif isinstance(value, MutableMapping):
                raise TypeError(f"the config holds a {type(value).__name__}, not a dict")

    def intact(self) -> bool:
        """Whether every mapping holds what it held when the snapshot was taken."""
        # Values by identity (an equal copy put in place of a mapping would go
        # unguarded); keys by equality, as a dict itself compares them.
        return (
            tuple(map(len, self._value_views)) == self._lengths
            and all(map(is_, chain.from_iterable(self._value_views), self._values))
            and tuple(chain.from_iterable(self._key_views)) == self._keys
        )

    def restore(self) -> None:
        """Put every mapping back as it was (in place: the objects stay the same)."""
        for node, (keys, values) in zip(self._nodes, self._items):
            if len(node) != len(keys) or not all(map(is_, dict.values(node), values)) or tuple(dict.keys(node)) != keys:
                dict.clear(node)
                dict.update(node, zip(keys, values))


@dataclass
class FastPath:
    """The fast path of one worker process.

    Attributes:
        active: Whether ``Context.__call__`` is the fast one in this process.
        reason: Why it is off, when it is.
        guard: The base config and its snapshot (None when off).
        thread_id: The one thread it applies to (the worker's main thread).
    """

    active: bool
    reason: Optional[str] = None
    guard: Optional[ConfigSnapshot] = None
    thread_id: Optional[int] = None


# Context keys that would shadow the methods Prefect's code calls on exit.
_SHADOWING = frozenset({"clear", "update", "popitem"})


def fast_call(guard: ConfigSnapshot, thread_id: int, context_class: Optional[type] = None) -> Callable[..., Any]:
    """A ``Context.__call__`` that skips the merge as the module docstring says.

    Args:
        guard: The base config (``guard.root``) and its snapshot.
        thread_id: The one thread whose entries may skip the merge.
        context_class: The class whose instances have their dict handled
            directly; default prefect's `Context`.

    Everything but the guarded branch is prefect 1.4.1's own code, except that
    a `Context` (not a subclass) has its own dict cleared and refilled directly
    (``clear`` and ``update`` do exactly that, one key at a time, through
    ``popitem``, ``__delitem__`` and ``__setitem__``), unless a context key
    shadows one of those methods (then Prefect's calls run, as they would).
    """
    base = guard.root
    get_ident = threading.get_ident
    context_class = context_class or prefect_context.Context

    @contextlib.contextmanager
    def __call__(self: Any, *args: MutableMapping, **kwargs: Any) -> Iterator[Any]:
        previous_context = self.__dict__.copy()
        guarded = False
        direct = type(self) is context_class and _SHADOWING.isdisjoint(previous_context)
        try:
            new_context = dict(*args, **kwargs)
            direct = direct and _SHADOWING.isdisjoint(new_context)
            if "config" in new_context:
                given = new_context["config"]
                if given is base and self.get("config") is base and get_ident() == thread_id and guard.intact():
                    guarded = True  # Prefect's merge would return an equal copy of it
                else:
                    new_context["config"] = merge_dicts(self.get("config", {}), new_context["config"])
            if direct:
                self.__dict__.update(new_context)
            else:
                self.update(new_context)  # type: ignore
            yield self
        finally:
            if direct:
                items = self.__dict__
                items.clear()
                items.update(previous_context)
            else:
                self.clear()
                self.update(previous_context)
            if guarded and not guard.intact():
                # Changed inside: in Prefect that change went to a copy that is gone now.
                guard.restore()

    return __call__


class _FlowTime:
    """The ``time`` module as ``prefect.core.flow`` sees it in worker processes:
    every attribute is the module's own, except that ``sleep(0)`` returns at
    once (see the module docstring)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        """``time.sleep(seconds)``, skipped when there is nothing to wait for."""
        if seconds != 0:
            time.sleep(seconds)


_INSTALLED: List[FastPath] = []  # this process's fast path, once installed (worker processes only)


def install() -> FastPath:
    """Turn the fast path on in this process, unless prefect's functions differ
    from the ones it was written against. Idempotent.

    Call it in a worker process's main thread, before any flow runs there, and
    never in a caller's process.

    Returns:
        Whether it is on, and if not, why.
    """
    if _INSTALLED:
        return _INSTALLED[0]
    reason = mismatch()
    if reason is None and threading.current_thread() is not threading.main_thread():
        reason = "it is installed from a thread other than the main thread"
    path = FastPath(active=False, reason=reason)
    if reason is None:
        try:
            guard = ConfigSnapshot(prefect_context.context.config)
        except TypeError as err:
            path = FastPath(active=False, reason=str(err))
        else:
            thread_id = threading.get_ident()
            prefect_context.Context.__call__ = fast_call(guard, thread_id)  # type: ignore[method-assign]
            if getattr(prefect_flow, "time", None) is time:
                prefect_flow.time = _FlowTime()  # type: ignore[assignment]
            path = FastPath(active=True, guard=guard, thread_id=thread_id)
    _INSTALLED.append(path)
    return path


def is_active() -> bool:
    """Whether the fast path is on in this process."""
    return bool(_INSTALLED) and _INSTALLED[0].active
