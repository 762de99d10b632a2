"""HTTP requests of one ``run_and_return`` of a 10-task flow on a Prefect Server backend.

Counts, in the emulated Prefect Server of ``tests/server/emulator/`` (real HTTP,
real prefect Client, flows run by prefect's own LocalAgent and ``prefect execute
flow-run``), the requests made by (the agent's and the runners' own requests are
not counted):

- ours: ``DockerBackend.run_and_return(flow_id=...)`` with the default
  `PrefectServerConfig` polling settings;
- the original: the seed's ``ServerBackend.run_and_return`` approach, run with
  prefect's own code (``FlowView.from_flow_id``, ``Client.create_flow_run``,
  ``watch_flow_run(stream_states=True, stream_logs=True)``,
  ``FlowRunView.from_flow_run_id``, ``get_all_task_runs`` and
  ``TaskRunView.get_result`` per task run), inside a prefect context pointed at
  the emulator (only this script's process).

Both run the same flow on the same emulator, for a quick flow and for one whose
ten tasks take 0.5 s each. Prints the counts and their ratio measured in this run.

    .venv/bin/python benchmarks/server_requests.py
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import prefect
from prefect import Flow, Parameter, task
from prefect.engine.results import PrefectResult
from prefect.storage import Module

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "benchmark"


def _emulator() -> Any:
    name = "lume_scheduling_tests_emulator"
    path = ROOT / "tests" / "server" / "emulator" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=[str(path.parent)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@task(name="step")
def step(total: float, seconds: float) -> float:
    time.sleep(seconds)
    return total + 1


# Ten chained tasks; the flow runs' processes import this file as `server_requests`
# (the agent puts benchmarks/ on their PYTHONPATH).
with Flow("ten-tasks", storage=Module("server_requests"), result=PrefectResult()) as ten_task_flow:
    seconds = Parameter("seconds", default=0.0)
    total: Any = 0.0
    for _ in range(10):
        total = step(total, seconds)


def ours(backend: Any, flow_id: str, parameters: Dict[str, Any]) -> Any:
    return backend.run_and_return(parameters, flow_id=flow_id)


def original(api_url: str, flow_id: str, parameters: Dict[str, Any]) -> Any:
    """The seed's ServerBackend.run_and_return, minus PrefectConfig.apply()."""
    from prefect.backend import FlowRunView, FlowView
    from prefect.backend.flow_run import watch_flow_run
    from prefect.run_configs import DockerRun

    config = prefect.config.copy()
    config.backend = "server"
    config.cloud.api = api_url
    with prefect.context(config=config):
        client = prefect.Client(api_server=api_url)
        flow_view = FlowView.from_flow_id(flow_id)
        run_config = DockerRun(
            image="ghcr.io/slac-ml/lume-services:1.0",
            env={"PREFECT__CONTEXT__PROJECT_NAME": flow_view.project_name},
            labels=["lume-services"],
        )
        flow_run_id = client.create_flow_run(flow_id=flow_id, parameters=parameters, run_config=run_config)
        for _log in watch_flow_run(flow_run_id, stream_states=True, stream_logs=True):
            pass
        flow_run = FlowRunView.from_flow_run_id(flow_run_id)
        if flow_run.state.is_failed():
            raise RuntimeError(flow_run.state.message)
        results = {}
        for task_run in flow_run.get_all_task_runs():
            try:
                results[task_run.task_slug] = task_run.get_result()
            except ValueError:
                results[task_run.task_slug] = None
        return results


def count(server: Any, call: Callable[[], Any]) -> Tuple[int, float, Any]:
    start, began = server.request_count, time.monotonic()
    value = call()
    return server.request_count - start, time.monotonic() - began, value


def main() -> None:
    logging.getLogger("prefect").setLevel(logging.WARNING)
    emulator = _emulator()
    from lume_scheduling.adapters.server import DockerBackend, PrefectServerConfig

    workdir = Path(tempfile.mkdtemp(prefix="server-requests-"))
    emulated = emulator.Emulated(workdir, emulator.LocalAgentKind(import_paths=[ROOT / "benchmarks"]))
    server = emulated.server
    try:
        config = PrefectServerConfig(api_url=server.url, default_image="ghcr.io/slac-ml/lume-services:1.0")
        with DockerBackend(config) as backend:
            backend.create_project(PROJECT)
            flow_id = backend.register_flow(ten_task_flow, PROJECT, no_url=True)
            print(f"{'flow':<28}{'approach':<10}{'requests':>9}{'seconds':>9}")
            for label, seconds in (("10 quick tasks", 0.0), ("10 tasks of 0.5 s", 0.5)):
                parameters = {"seconds": seconds}
                fresh = DockerBackend(config)  # knows nothing of the flow yet
                first, _, _ = count(server, lambda: ours(fresh, flow_id, parameters))
                mine, mine_time, mine_value = count(server, lambda: ours(backend, flow_id, parameters))
                theirs, their_time, their_value = count(server, lambda: original(server.url, flow_id, parameters))
                assert mine_value["step-10"] == their_value["step-10"] == 10.0, (mine_value, their_value)
                print(f"{label:<28}{'original':<10}{theirs:>9}{their_time:>9.1f}")
                print(f"{label:<28}{'ours':<10}{mine:>9}{mine_time:>9.1f}")
                print(f"{label:<28}{'ours, 1st':<10}{first:>9}")
                print(f"{'':<28}ours/original = {mine / theirs:.2f} (first call {first / theirs:.2f})")
    finally:
        emulated.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
