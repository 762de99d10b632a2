"""The fast path for Prefect's context: on in worker processes only, off (with
one log line) when prefect is not the version it was written against, and
equivalent to Prefect's own ``Context.__call__``.

The equivalence is checked here on private `Context` subclasses (prefect's own
class is never touched in this process); the semantics corpus checks it on
whole flows in worker processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Tuple

import prefect
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect import Flow, task
from prefect.configuration import Config
from prefect.utilities.context import Context

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.local import _fast_context
from lume_scheduling.adapters.local._fast_context import ConfigSnapshot, fast_call


@task(name="fast_path_state")
def fast_path_state() -> Tuple[bool, bool]:
    """Whether the fast path is on here, and whether entering the context with
    the config in force kept that very object (Prefect makes a copy)."""
    from lume_scheduling.adapters.local import _fast_context as fast

    outer = prefect.context.config
    with prefect.context(config=outer):
        kept = prefect.context.config is outer
    return fast.is_active(), kept


with Flow("fast-path-state") as fast_path_flow:
    fast_path_state()


@task(name="flow_module_time")
def flow_module_time() -> Tuple[bool, List[float]]:
    """Whether prefect.core.flow sees the time module itself, and the sleeps it
    would ask for (zero sleeps are skipped by the fast path)."""
    import time as time_module

    import prefect.core.flow as flow_module

    if flow_module.time is time_module:
        return True, []  # Prefect's own (and this may be the caller's process: patch nothing)
    asked: List[float] = []
    real = time_module.sleep
    time_module.sleep = asked.append  # type: ignore[assignment]
    try:
        flow_module.time.sleep(0)
        flow_module.time.sleep(0.25)
    finally:
        time_module.sleep = real
    return False, asked


with Flow("flow-module-time") as flow_module_time_flow:
    flow_module_time()


def _prefect_call_is_prefects_own() -> bool:
    return _fast_context.source_digest(Context.__call__.__wrapped__) == _fast_context.EXPECTED_SOURCES[
        "prefect.utilities.context.Context.__call__"
    ]


class TestWhereItIsOn:
    def test_on_in_worker_processes(self, isolated: LocalBackend) -> None:
        assert isolated.run_and_return({}, None, "fast_path_state", flow=fast_path_flow) == (True, True)

    def test_off_in_the_callers_process_even_after_isolated_runs(self, isolated: LocalBackend) -> None:
        isolated.run_and_return({}, None, "fast_path_state", flow=fast_path_flow)
        assert not _fast_context.is_active()
        assert _prefect_call_is_prefects_own()
        outer = prefect.context.config
        with prefect.context(config=outer):
            assert prefect.context.config is not outer

    def test_off_for_in_process_runs(self, in_process: LocalBackend) -> None:
        assert in_process.run_and_return({}, None, "fast_path_state", flow=fast_path_flow) == (False, False)
        assert _prefect_call_is_prefects_own()

    def test_flow_run_skips_only_zero_sleeps_in_worker_processes(
        self, isolated: LocalBackend, in_process: LocalBackend
    ) -> None:
        assert isolated.run_and_return({}, None, "flow_module_time", flow=flow_module_time_flow) == (False, [0.25])
        assert in_process.run_and_return({}, None, "flow_module_time", flow=flow_module_time_flow) == (True, [])
        import prefect.core.flow as flow_module
        import time as time_module

        assert flow_module.time is time_module

    def test_prefect_here_is_the_version_it_was_written_against(self) -> None:
        assert prefect.__version__ == _fast_context.PREFECT_VERSION
        assert _fast_context.mismatch() is None


PATCH_MODULE = '''
"""Replaces prefect's Context.__call__ with one of the same behaviour but another source."""
import contextlib

from prefect.utilities import context

_original = context.Context.__call__.__wrapped__


@contextlib.contextmanager
def changed(self, *args, **kwargs):
    with contextlib.contextmanager(_original)(self, *args, **kwargs) as entered:
        yield entered


context.Context.__call__ = changed
'''

SCRIPT = '''
import json, logging, multiprocessing, sys

sys.path.insert(0, sys.argv[1])
# Preloaded by the fork server before the worker module: every worker gets it.
multiprocessing.get_context("forkserver").set_forkserver_preload(["patch_prefect"])

from prefect import Flow, task
from lume_scheduling.adapters.local import LOGGER_NAME, LocalBackend


@task(name="probe")
def probe(x):
    from lume_scheduling.adapters.local import _fast_context
    return [x + 1, _fast_context.is_active()]


with Flow("probe") as flow:
    probe(1)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


if __name__ == "__main__":
    lines = Lines()
    logging.getLogger(LOGGER_NAME).addHandler(lines)
    with LocalBackend(max_workers=2, max_runs_per_worker=2) as backend:
        ids = [backend.submit({}, flow=flow) for _ in range(6)]
        values = [backend.result(flow_run_id, "probe") for flow_run_id in ids]
        workers = backend._stats()["workers_started"]
    print(json.dumps({"values": values, "lines": lines.lines, "workers": workers}))
'''


class TestAChangedPrefectTurnsItOff:
    def test_it_stays_off_and_says_so_once_in_the_log(self, tmp_path: Path) -> None:
        (tmp_path / "patch_prefect.py").write_text(PATCH_MODULE, encoding="utf-8")
        script = tmp_path / "probe.py"
        script.write_text(SCRIPT, encoding="utf-8")
        # The fork server (a fresh `python -c`) finds the patch through PYTHONPATH.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120, env=env
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["values"] == [[2, False]] * 6  # runs are right, at Prefect's own pace
        assert report["workers"] >= 3  # several workers said so; the log says it once
        warnings = [line for line in report["lines"] if "fast path" in line]
        assert len(warnings) == 1, report["lines"]
        assert "prefect.utilities.context.Context.__call__" in warnings[0]
        assert "1.4.1" in warnings[0]

    def test_a_function_with_another_source_is_a_mismatch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from prefect.utilities import collections

        def merge_dicts(d1: Any, d2: Any) -> Any:  # same name, another body
            return {**d1, **d2}

        monkeypatch.setattr(_fast_context, "merge_dicts", merge_dicts)
        reason = _fast_context.mismatch()
        assert reason is not None and "merge_dicts" in reason
        assert collections.merge_dicts is not merge_dicts  # prefect itself untouched


# --------------------------------------------------------------- the snapshot


class TestConfigSnapshot:
    def test_it_tells_a_change_at_any_depth_and_puts_it_back_in_place(self) -> None:
        config = Config({"a": Config({"b": Config({"c": 1})}), "d": "x"})
        inner = config.a.b
        snapshot = ConfigSnapshot(config)
        assert snapshot.intact()
        config.a.b.c = 2
        assert not snapshot.intact()
        snapshot.restore()
        assert snapshot.intact() and config.a.b.c == 1 and config.a.b is inner
        config["new"] = 1
        del config.a["b"]
        assert not snapshot.intact()
        snapshot.restore()
        assert dict(config) == {"a": {"b": {"c": 1}}, "d": "x"} and config.a.b is inner

    def test_an_equal_value_in_place_of_a_mapping_is_a_change(self) -> None:
        config = Config({"a": Config({"b": 1})})
        snapshot = ConfigSnapshot(config)
        dict.__setitem__(config, "a", Config({"b": 1}))  # equal, not the same object
        assert not snapshot.intact()

    def test_a_renamed_key_is_a_change(self) -> None:
        config = Config({"a": 1, "b": 2})
        snapshot = ConfigSnapshot(config)
        config["c"] = config.pop("b")
        assert not snapshot.intact()

    def test_a_mapping_that_is_not_a_dict_is_refused(self) -> None:
        from collections import UserDict

        with pytest.raises(TypeError, match="UserDict"):
            ConfigSnapshot({"a": UserDict()})


# -------------------------------------------------- equivalence with Prefect


class PlainContext(Context):
    """Prefect's own ``__call__``."""


def _small_config() -> Config:
    return Config(
        {
            "logging": {"level": "INFO", "format": "%(message)s"},
            "tasks": {"defaults": {"max_retries": 0, "retry_delay": None}},
            "flows": {"checkpointing": False},
            "cloud": {"api": "http://localhost:4200", "use_local_secrets": True},
            "debug": False,
        }
    )


def _fast_pair() -> Tuple[PlainContext, Context]:
    """A context with Prefect's ``__call__`` and one with the fast one, which
    guards that context's own base config (a class per pair, as the fast
    ``__call__`` belongs to one base config)."""
    fast_class = type("FastContext", (Context,), {})
    plain, fast = PlainContext(), fast_class()
    # A small config of the same shape as prefect's: merges stay cheap.
    plain.config, fast.config = _small_config(), _small_config()
    guard = ConfigSnapshot(fast.config)
    fast_class.__call__ = fast_call(guard, threading.get_ident(), context_class=fast_class)  # type: ignore
    return plain, fast


PATHS = [
    ("logging", "level"),
    ("tasks", "defaults", "max_retries"),
    ("flows", "checkpointing"),
    ("section",),
    ("section", "key"),
    ("cloud", "api"),
]
VALUES = st.sampled_from([0, 1, "x", None, True])


def _as_data(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _as_data(item) for key, item in dict.items(value)}
    return value


def _set(config: Any, path: Tuple[str, ...], value: Any) -> None:
    node = config
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return
    node[path[-1]] = value


def _delete(config: Any, path: Tuple[str, ...]) -> None:
    node = config
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


def _entry(kind: str, ctx: Any, value: Any) -> Dict[str, Any]:
    if kind == "current":
        return {"config": ctx.config}
    if kind == "partial":
        return {"config": {"logging": {"level": value}}}
    if kind == "section":
        return {"config": {"section": {"key": value}}, "other": value}
    if kind == "whole-copy":
        return {"config": ctx.config.copy()}
    return {"other": value}


def _run(ctx: Any, program: List[Any], trace: List[Any]) -> None:
    for op in program:
        if op[0] == "read":
            trace.append((_as_data(ctx.config), sorted(key for key in ctx if key != "config")))
        elif op[0] == "set":
            _set(ctx.config, op[1], op[2])
        elif op[0] == "delete":
            _delete(ctx.config, op[1])
        else:
            _, kind, value, body = op
            with ctx(**_entry(kind, ctx, value)):
                _run(ctx, body, trace)
            trace.append(("after", _as_data(ctx.config)))


LEAVES = st.one_of(
    st.tuples(st.just("read")),
    st.tuples(st.just("set"), st.sampled_from(PATHS), VALUES),
    st.tuples(st.just("delete"), st.sampled_from(PATHS)),
)
PROGRAMS = st.lists(
    st.recursive(
        LEAVES,
        lambda children: st.tuples(
            st.just("enter"),
            st.sampled_from(["current", "current", "partial", "section", "whole-copy", "none"]),
            VALUES,
            st.lists(children, max_size=4),
        ),
        max_leaves=16,
    ),
    max_size=5,
)


class TestSameAsPrefect:
    @settings(max_examples=100, deadline=None, database=None)
    @given(PROGRAMS)
    def test_any_program_of_entries_and_changes_reads_what_it_reads_in_prefect(self, program: List[Any]) -> None:
        plain, fast = _fast_pair()
        plain_trace: List[Any] = []
        fast_trace: List[Any] = []
        _run(plain, program + [("read",)], plain_trace)
        _run(fast, program + [("read",)], fast_trace)
        assert fast_trace == plain_trace

    def test_entering_with_the_config_in_force_keeps_the_object(self) -> None:
        plain, fast = _fast_pair()
        with fast(config=fast.config):
            kept = fast.config
        with plain(config=plain.config):
            copied = plain.config
        assert kept is fast.config and copied is not plain.config

    def test_a_change_inside_a_kept_entry_is_undone_at_its_exit(self) -> None:
        _, fast = _fast_pair()
        base = fast.config
        with fast(config=base):
            with fast(config=fast.config):
                fast.config.logging.level = "CHANGED"
                assert fast.config.logging.level == "CHANGED"
            assert fast.config.logging.level != "CHANGED"
        assert fast.config is base

    def test_another_thread_merges_as_prefect_does(self) -> None:
        _, fast = _fast_pair()
        kept: List[bool] = []

        def enter() -> None:
            # A thread starts with a fresh context of its own (threading.local).
            with fast(config=fast.config):
                outer = fast.config
                with fast(config=outer):
                    kept.append(fast.config is outer)

        thread = threading.Thread(target=enter)
        thread.start()
        thread.join()
        assert kept == [False]

    def test_another_thread_handed_the_base_config_itself_still_merges(self) -> None:
        _, fast = _fast_pair()
        base = fast.config
        kept: List[bool] = []

        def enter() -> None:
            fast.config = base  # shared with the main thread: only the main thread may keep it
            with fast(config=base):
                kept.append(fast.config is base)

        thread = threading.Thread(target=enter)
        thread.start()
        thread.join()
        assert kept == [False]
