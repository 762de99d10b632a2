"""The semantics corpus: flows run both ways, by plain prefect and by a warm worker.

Each case is one or more flow runs. Every run goes first to a warm worker of
`LocalBackend` (fast path for Prefect's context on, one worker for the whole
module, so every case runs after the ones before it in the same process), then
to `reference_run` (plain ``flow.run()`` in a fresh process). The two must agree
on the final state, its message, every task run (state, value, message, map
index) and every log line Prefect and the tasks emitted, at DEBUG, in order.

When a difference is found, add the flow that shows it here.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import prefect
import pytest
from prefect import Flow, Parameter, case, flatten, task, unmapped
from prefect.engine import signals
from prefect.engine.results import LocalResult, PrefectResult
from prefect.executors import LocalDaskExecutor
from prefect.tasks.secrets import PrefectSecret
from prefect.triggers import all_failed, always_run, any_failed
from prefect.utilities.configuration import set_temporary_config

from lume_scheduling.adapters.local import LOGGER_NAME, LocalBackend
from lume_scheduling.adapters.local import _fast_context
from lume_scheduling.adapters.testing.reference import LogLine, reference_run
from lume_scheduling.domain import FlowRunResult

# ------------------------------------------------------------------ tasks


@task(name="context_reads")
def context_reads() -> Dict[str, Any]:
    """What a task reads from Prefect's context (values that are the same both ways)."""
    ctx = prefect.context
    return {
        "keys": sorted(ctx.keys()),
        "flow_name": ctx.get("flow_name"),
        "flow_run_id": ctx.get("flow_run_id"),
        "task_run_count": ctx.get("task_run_count"),
        "map_index": ctx.get("map_index"),
        "task_name": ctx.get("task_name"),
        "task_slug": ctx.get("task_slug"),
        "task_full_name": ctx.get("task_full_name"),
        "parameters": dict(ctx.get("parameters") or {}),
        "checkpointing": ctx.get("checkpointing"),
        "config_logging_level": ctx.config.logging.level,
        "config_keys": sorted(ctx.config.keys()),
        "caches": sorted(ctx.get("caches", {})),
    }


@task(name="mapped_context")
def mapped_context(x: int) -> Tuple[int, Optional[int], str]:
    return x, prefect.context.get("map_index"), prefect.context.get("task_full_name")


@task(name="config_override")
def config_override() -> Dict[str, Any]:
    """``prefect.context(config=...)`` inside a task: inside, after, and nested."""
    seen: Dict[str, Any] = {"before": prefect.context.config.tasks.defaults.max_retries}
    with prefect.context(config={"tasks": {"defaults": {"max_retries": 7}}, "extra": {"a": 1}}):
        seen["inside"] = prefect.context.config.tasks.defaults.max_retries
        seen["inside_extra"] = dict(prefect.context.config.extra)
        seen["inside_level"] = prefect.context.config.logging.level
        with prefect.context(config=prefect.context.config):
            seen["nested_same"] = prefect.context.config.tasks.defaults.max_retries
        with prefect.context(config={"extra": {"b": 2}}):
            seen["nested_partial"] = dict(prefect.context.config.extra)
    seen["after"] = prefect.context.config.tasks.defaults.max_retries
    seen["after_extra"] = "extra" in prefect.context.config
    return seen


@task(name="other_overrides")
def other_overrides() -> Dict[str, Any]:
    """Context keys other than config, set and shadowed inside a task."""
    seen: Dict[str, Any] = {}
    with prefect.context(flow_name="shadowed", answer=42):
        seen["inside"] = (prefect.context.flow_name, prefect.context.answer)
        with prefect.context({"answer": 43}, extra="x"):
            seen["nested"] = (prefect.context.answer, prefect.context.extra)
        seen["back"] = prefect.context.answer
    seen["after"] = (prefect.context.flow_name, prefect.context.get("answer"))
    return seen


@task(name="same_config_entry")
def same_config_entry() -> Dict[str, Any]:
    """Entering the context with the config in force, then changing it inside."""
    outer = prefect.context.config
    with prefect.context(config=outer):
        prefect.context.config.tasks.defaults.max_retries = 99
        inside = prefect.context.config.tasks.defaults.max_retries
    return {"inside": inside, "after": prefect.context.config.tasks.defaults.max_retries}


@task(name="mutate_context_config")
def mutate_context_config() -> str:
    """Changes the config it runs under: in Prefect that is the task run's own copy."""
    prefect.context.config.logging.level = "CHANGED"
    prefect.context.config.tasks.defaults["max_retries"] = 5
    prefect.context.config["new_section"] = {"x": 1}
    del prefect.context.config.cloud["api"]
    return prefect.context.config.logging.level


@task(name="read_context_config")
def read_context_config(_: Any = None) -> Dict[str, Any]:
    config = prefect.context.config
    return {
        "level": config.logging.level,
        "max_retries": config.tasks.defaults.max_retries,
        "new_section": "new_section" in config,
        "api": "api" in config.cloud,
    }


@task(name="mutate_global_config")
def mutate_global_config() -> str:
    """Changes ``prefect.config`` itself (the process-wide config)."""
    prefect.config.logging.level = "GLOBAL-CHANGE"
    prefect.config.tasks.defaults.max_retries = 3
    prefect.config["added"] = {"y": 2}
    return prefect.config.logging.level


@task(name="read_global_config")
def read_global_config() -> Dict[str, Any]:
    return {
        "level": prefect.config.logging.level,
        "max_retries": prefect.config.tasks.defaults.max_retries,
        "added": "added" in prefect.config,
        "context_level": prefect.context.config.logging.level,
    }


@task(name="temporary_config")
def temporary_config() -> Dict[str, Any]:
    """Prefect's own helper, which enters the context with ``prefect.config``."""
    with set_temporary_config({"logging.level": "TEMP", "extra.value": 1}):
        inside = (prefect.context.config.logging.level, prefect.config.logging.level)
    return {"inside": inside, "after": (prefect.context.config.logging.level, prefect.config.logging.level)}


@task(name="read_secret")
def read_secret() -> Dict[str, Any]:
    """Secrets are read through the context (``use_local_secrets``)."""
    with prefect.context(secrets={"API_KEY": "not-a-real-key", "OTHER": "x"}):
        value = PrefectSecret("API_KEY").run()
        names = sorted(prefect.context.secrets)
    return {"value": value, "names": names, "after": prefect.context.get("secrets")}


@task(name="flaky", max_retries=2, retry_delay=datetime.timedelta(seconds=0.2))
def flaky() -> int:
    """Fails on its first two runs, then succeeds."""
    count = prefect.context.get("task_run_count")
    prefect.context.get("logger").info("attempt %s", count)
    if count < 3:
        raise RuntimeError(f"attempt {count} fails")
    return count


@task(name="always_fails", max_retries=1, retry_delay=datetime.timedelta(seconds=0.1))
def always_fails() -> None:
    raise ValueError("still broken")


@task(name="too_slow", timeout=1)
def too_slow() -> str:
    time.sleep(3)
    return "finished"


@task(name="quick_enough", timeout=5)
def quick_enough() -> str:
    return "in time"


def _record_transition(task_obj: Any, old: Any, new: Any) -> Any:
    prefect.context.get("logger").info(
        "handler: %s %s -> %s", task_obj.name, type(old).__name__, type(new).__name__
    )
    return new


def _rename_success(task_obj: Any, old: Any, new: Any) -> Any:
    if new.is_successful():
        new.message = f"handled by state handler ({prefect.context.get('task_run_count')})"
    return new


@task(name="handled", state_handlers=[_record_transition, _rename_success])
def handled(x: int) -> int:
    return x * 2


@task(name="boom")
def boom() -> None:
    raise ValueError("boom")


@task(name="fine")
def fine() -> str:
    return "fine"


@task(name="after_any_failed", trigger=any_failed)
def after_any_failed() -> str:
    return "ran because something failed"


@task(name="after_all_failed", trigger=all_failed)
def after_all_failed() -> str:
    return "ran because all failed"


@task(name="cleanup", trigger=always_run)
def cleanup() -> str:
    return "cleaned"


@task(name="downstream")
def downstream() -> str:
    return "never"


@task(name="square")
def square(x: int) -> int:
    return x * x


@task(name="inc")
def inc(x: int, by: int = 1) -> int:
    return x + by


@task(name="pairs")
def pairs(n: int) -> List[List[int]]:
    return [[i, i + 1] for i in range(n)]


@task(name="total")
def total(values: List[int]) -> int:
    return sum(values)


@task(name="fails_on_odd")
def fails_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd: {x}")
    return x


@task(name="skip_me")
def skip_me() -> None:
    raise signals.SKIP("skipped on purpose")


@task(name="fail_signal")
def fail_signal() -> None:
    raise signals.FAIL("failed on purpose")


@task(name="loop")
def loop() -> int:
    """Loops three times through Prefect's LOOP signal."""
    count = prefect.context.get("task_loop_count", 1)
    result = prefect.context.get("task_loop_result", 0)
    if count < 3:
        raise signals.LOOP(message=f"loop {count}", result=result + count)
    return result + count


@task(name="cached", cache_for=datetime.timedelta(hours=1))
def cached(x: int) -> float:
    return x + time.time() % 1  # a cached value would repeat the first run's


@task(name="is_even")
def is_even(x: int) -> bool:
    return x % 2 == 0


@task(name="even_branch")
def even_branch() -> str:
    return "even"


@task(name="odd_branch")
def odd_branch() -> str:
    return "odd"


@task(name="tagged", tags=["alpha", "beta"])
def tagged() -> List[str]:
    return sorted(prefect.context.get("task_tags") or [])


@task(name="thread_context")
def thread_context() -> Dict[str, Any]:
    """A thread started by a task sees a fresh context of its own."""
    seen: Dict[str, Any] = {}

    def look() -> None:
        seen["flow_name"] = prefect.context.get("flow_name")
        seen["level"] = prefect.context.config.logging.level
        with prefect.context(config={"logging": {"level": "THREAD"}}):
            seen["inside"] = prefect.context.config.logging.level

    worker = threading.Thread(target=look)
    worker.start()
    worker.join()
    seen["main_level"] = prefect.context.config.logging.level
    return seen


@task(name="logs")
def logs(message: str) -> str:
    prefect.context.get("logger").info("task says %s", message)
    prefect.context.get("logger").debug("debug detail")
    logging.getLogger("corpus.user").warning("user logger says %s", message)
    return message


# Written to the run's working directory (a relative dir, not validated).
@task(
    name="checkpointed",
    result=LocalResult(dir=".", validate_dir=False, location="{task_name}-{map_index}.txt"),
    checkpoint=True,
)
def checkpointed(x: int) -> int:
    return x * 10


@task(name="prefect_result", result=PrefectResult(), checkpoint=True)
def prefect_result(x: int) -> int:
    return x + 100


@task(name="result_files", trigger=always_run)
def result_files(directory: str) -> List[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def _enable_checkpointing(flow_obj: Any, old: Any, new: Any) -> Any:
    """A flow state handler that changes the config of the whole run."""
    if new.is_running():
        prefect.context.config.flows.checkpointing = True
    return new


def _flow_handler_override(flow_obj: Any, old: Any, new: Any) -> Any:
    if new.is_finished():
        with prefect.context(config={"logging": {"level": "IN-HANDLER"}}):
            new.message = f"{new.message} / level {prefect.context.config.logging.level}"
    return new


# ------------------------------------------------------------------ flows


def _flow(name: str, **settings: Any) -> Flow:
    return Flow(f"corpus-{name}", **settings)


with _flow("context-reads") as context_reads_flow:
    inc(Parameter("start", default=1))
    context_reads()
    mapped_context.map([10, 20, 30])

with _flow("config-overrides") as config_overrides_flow:
    config_override()
    other_overrides()
    same_config_entry()
    read_context_config()

with _flow("context-config-changed-by-a-task") as mutate_context_flow:
    changed = mutate_context_config()
    read_context_config(changed)
    read_context_config.map([1, 2], upstream_tasks=[changed])

with _flow("global-config-changed-by-a-task") as mutate_global_flow:
    read_global_config(upstream_tasks=[mutate_global_config()])

with _flow("global-config-read") as read_global_flow:
    read_global_config()
    read_context_config()

with _flow("temporary-config") as temporary_config_flow:
    temporary_config()
    read_context_config()

with _flow("secrets") as secrets_flow:
    read_secret()

# One retrying task per flow: how many passes flow.run makes over two tasks
# with retries depends on timing, in plain prefect too.
with _flow("retries") as retries_flow:
    flaky()
    fine()

with _flow("retries-exhausted") as retries_exhausted_flow:
    always_fails()

with _flow("time-outs") as timeouts_flow:
    too_slow()
    quick_enough()

with _flow("state-handlers") as state_handlers_flow:
    handled.map([1, 2])
    handled(5)

with _flow("triggers") as triggers_flow:
    broken = boom()
    ok = fine()
    after_any_failed(upstream_tasks=[broken, ok])
    after_all_failed(upstream_tasks=[broken])
    after_all_failed(upstream_tasks=[ok])
    cleanup(upstream_tasks=[broken])
    downstream(upstream_tasks=[broken])

with _flow("mapped") as mapped_flow:
    squares = square.map([1, 2, 3, 4])
    incremented = inc.map(squares, by=unmapped(10))
    total(incremented)
    inc.map(flatten(pairs(3)))
    fails_on_odd.map([1, 2, 3])

with _flow("nested-mapped") as nested_mapped_flow:
    square.map(inc.map(square.map(inc.map([0, 1, 2]))))

with _flow("signals") as signals_flow:
    skipped = skip_me()
    downstream(upstream_tasks=[skipped])
    fail_signal()
    loop()

with _flow("cached") as cached_flow:
    cached(Parameter("x", default=1))

with _flow("case") as case_flow:
    x = Parameter("x", default=2)
    with case(is_even(x), True):
        even_branch()
    with case(is_even(x), False):
        odd_branch()

with _flow("tags-threads-logs") as misc_flow:
    tagged()
    thread_context()
    logs("hello")

with _flow("results-kept", state_handlers=[_enable_checkpointing]) as results_flow:
    directory = Parameter("directory")
    kept = checkpointed.map([1, 2])
    kept_single = prefect_result(1)
    result_files(directory, upstream_tasks=[kept, kept_single])
    read_context_config()

with _flow("flow-state-handler", state_handlers=[_flow_handler_override]) as flow_handler_flow:
    read_context_config()

with _flow("local-dask-threads", executor=LocalDaskExecutor(scheduler="threads", num_workers=2)) as dask_flow:
    inc.map(square.map([1, 2, 3]))
    context_reads()
    mutate_context_config()
    read_context_config()

with _flow("parameters") as parameters_flow:
    inc(Parameter("required"), by=Parameter("by", default=3))


# ------------------------------------------------------------------ cases


@dataclass
class Step:
    """One flow run of a case."""

    flow: Flow
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    """Flow runs made one after the other (in the same warm worker, and in
    fresh processes for plain prefect)."""

    name: str
    steps: List[Step]


CASES = [
    Case("context reads inside tasks, mapped too", [Step(context_reads_flow)]),
    Case("config and other overrides inside tasks", [Step(config_overrides_flow)]),
    Case(
        "a task changes the config it runs under; later tasks and runs do not see it",
        [Step(mutate_context_flow), Step(read_global_flow)],
    ),
    Case(
        "a task changes prefect.config; the next run does not see it",
        [Step(mutate_global_flow), Step(read_global_flow)],
    ),
    Case("set_temporary_config inside a task", [Step(temporary_config_flow), Step(read_global_flow)]),
    Case("secrets read through the context", [Step(secrets_flow)]),
    Case("retries with delays", [Step(retries_flow)]),
    Case("retries that run out", [Step(retries_exhausted_flow)]),
    Case("task time-outs", [Step(timeouts_flow)]),
    Case("task state handlers", [Step(state_handlers_flow)]),
    Case("triggers", [Step(triggers_flow)]),
    Case("mapped tasks", [Step(mapped_flow)]),
    Case("nested mapped tasks", [Step(nested_mapped_flow)]),
    Case("SKIP, FAIL and LOOP signals", [Step(signals_flow)]),
    Case("cache_for does not carry over to the next run", [Step(cached_flow), Step(cached_flow)]),
    Case("case branches", [Step(case_flow, {"x": 2}), Step(case_flow, {"x": 3})]),
    Case("task tags, a task's own thread, log lines", [Step(misc_flow)]),
    Case(
        "results kept with a result type (a flow state handler turns checkpointing on)",
        [Step(results_flow, {"directory": "."}), Step(read_global_flow)],
    ),
    Case("a flow state handler with a config override", [Step(flow_handler_flow)]),
    Case("LocalDaskExecutor with threads", [Step(dask_flow), Step(read_global_flow)]),
    Case(
        # Missing and unknown parameters never reach a worker: the port refuses
        # them before a run is created (FlowParameterError, in the contract suite).
        "parameters: given, defaulted",
        [
            Step(parameters_flow, {"required": 1}),
            Step(parameters_flow, {"required": 1, "by": 5}),
        ],
    ),
]

# ------------------------------------------------------------------ comparing

_NORMALISE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?"), "<time>"),
    (re.compile(r"0x[0-9a-f]+"), "<address>"),
]


def _normalise(line: LogLine) -> LogLine:
    name, level, message, slug = line
    for pattern, replacement in _NORMALISE:
        message = pattern.sub(replacement, message)
    return name, level, message, slug


_TASK_LINE = re.compile(r"^Task '([^']+)'")


def _log_view(lines: List[LogLine]) -> Tuple[List[Any], Dict[Tuple[Any, str], List[LogLine]]]:
    """Records of Prefect and of the corpus's own loggers, normalised: all of
    them (sorted: independent tasks run in an order that depends on object
    ids, so it differs from process to process even for plain prefect), and
    in order for each task run (its slug, and its map index as the message
    shows it)."""
    relevant = [_normalise(line) for line in lines if line[0].startswith(("prefect", "corpus"))]
    by_task: Dict[Tuple[Any, str], List[LogLine]] = {}
    for line in relevant:
        match = _TASK_LINE.match(line[2])
        if line[3] is not None:
            by_task.setdefault((line[3], match.group(1) if match else ""), []).append(line)
    return sorted(relevant, key=repr), by_task


class _RunLogs(logging.Handler):
    """The records the backend forwards, by flow run id."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.by_run: Dict[str, List[LogLine]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        run = getattr(record, "flow_run_id", None)
        if run is not None:
            self.by_run.setdefault(run, []).append(
                (record.name, record.levelname, record.getMessage(), getattr(record, "task_slug", None))
            )


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    """The module's one backend lives across tests: checked when it closes."""
    yield


@pytest.fixture(scope="module")
def warm() -> Iterator[Tuple[LocalBackend, _RunLogs]]:
    """One warm worker for the whole corpus, forwarding DEBUG records."""
    import multiprocessing

    logger = logging.getLogger(LOGGER_NAME)
    handler = _RunLogs()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with LocalBackend(max_workers=1) as backend:
            yield backend, handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert multiprocessing.active_children() == []


def _fast_run(warm: Tuple[LocalBackend, _RunLogs], step: Step, working_dir: str) -> Tuple[FlowRunResult, List[LogLine]]:
    backend, handler = warm
    flow_run_id = backend.submit(dict(step.parameters), flow=step.flow, working_dir=working_dir)
    assert backend.wait(flow_run_id, 120).is_final
    return backend.get_result(flow_run_id), handler.by_run.pop(flow_run_id, [])


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_warm_worker_runs_it_as_plain_prefect_does(case: Case, warm: Any, tmp_path: Any) -> None:
    for number, step in enumerate(case.steps, 1):
        fast_dir, raw_dir = tmp_path / f"fast-{number}", tmp_path / f"raw-{number}"
        fast_dir.mkdir()
        raw_dir.mkdir()
        fast, fast_logs = _fast_run(warm, step, str(fast_dir))
        raw = reference_run(step.flow, step.parameters, flow_run_id=fast.flow_run_id, working_dir=str(raw_dir))
        where = f"step {number} ({step.flow.name})"
        assert fast.state == raw.result.state, where
        assert fast.message == raw.result.message, where
        assert fast.exception_type == raw.result.exception_type, where
        assert [_task_view(run) for run in fast.task_runs] == [_task_view(run) for run in raw.result.task_runs], where
        assert _log_view(fast_logs) == _log_view(raw.logs), where
        assert sorted(os.listdir(fast_dir)) == sorted(os.listdir(raw_dir)), where


def _task_view(run: Any) -> Tuple[Any, ...]:
    value = run.value
    if run.slug.startswith("cached"):
        value = None if value is None else "a value"  # it differs per run by design
    return (run.key, run.name, run.state, value, run.message)


def test_the_corpus_ran_with_the_fast_path_on_in_the_worker_and_off_here(warm: Any) -> None:
    backend, _ = warm
    assert backend.run_and_return({}, None, "fast_path_probe", flow=_probe_flow) is True
    assert not _fast_context.is_active()


@task(name="fast_path_probe")
def fast_path_probe() -> bool:
    from lume_scheduling.adapters.local import _fast_context as fast

    return fast.is_active()


with Flow("corpus-probe") as _probe_flow:
    fast_path_probe()
