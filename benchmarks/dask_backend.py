"""Throughput of DaskBackend against serial raw ``flow.run()`` and LocalBackend, measured in one run.

Prints, side by side in one process, for the same number of workers (default:
``os.cpu_count()``; a Dask worker has one thread, so both run that many flows
at once):

1. 200 runs of a 1-task flow: serial raw ``flow.run()``, ``LocalBackend()``
   and ``DaskBackend()`` (embedded LocalCluster); the backends get the 200
   runs submitted at once, then every result is read;
2. 20 runs of a 0.2 s pure-Python task, the same way;
3. the ceiling one Dask task per run puts on the first: 200 no-op Dask tasks
   (``client.submit`` of a function returning its argument, then each
   ``future.result()``) on the same cluster.

Each backend measurement is the median of ``--rounds`` rounds, interleaved
(a busy machine slows all alike), after a warm-up that starts every worker.
The load average is printed at the start and the end. The last line is::

    dask: throughput_vs_local=<float> cpu_heavy_vs_local=<float> throughput_vs_raw=<float> cpu_heavy_vs_raw=<float> noop_tasks_vs_local=<float>

(runs per second of DaskBackend over LocalBackend's, and over serial raw runs;
the last: no-op Dask tasks per second over LocalBackend's 1-task flow runs).
Target on one machine: within 20% of LocalBackend (ratios >= 0.8).

    python benchmarks/dask_backend.py [--runs 200] [--heavy 20] [--rounds 5] [--workers N]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

from prefect import Flow, Parameter, task

from lume_scheduling.adapters.dask import DaskBackend
from lume_scheduling.adapters.local import LocalBackend


@task(name="increment")
def increment(x: int) -> int:
    """x + 1."""
    return x + 1


@task(name="spin")
def spin(loops: int) -> int:
    """Pure-Python work: ``loops`` iterations of arithmetic (holds the GIL)."""
    value = 0
    for i in range(loops):
        value = (value + i * i) % 1_000_003
    return value


def one_task_flow() -> Flow:
    with Flow("bench-one") as flow:
        increment(Parameter("x", default=1))
    return flow


def cpu_flow() -> Flow:
    with Flow("bench-cpu") as flow:
        spin(Parameter("loops"))
    return flow


def loops_for(seconds: float) -> int:
    """Iterations of `spin` that take about ``seconds`` here (median of 3)."""
    samples = []
    for _ in range(3):
        start = time.perf_counter()
        spin.run(200_000)
        samples.append(time.perf_counter() - start)
    return int(200_000 * seconds / statistics.median(samples))


def raw_serial(flow: Flow, parameters: List[Dict[str, int]]) -> float:
    start = time.perf_counter()
    for values in parameters:
        state = flow.run(parameters=values, run_on_schedule=False)
        assert state.is_successful(), state
    return time.perf_counter() - start


def all_at_once(backend: Any, flow: Flow, parameters: List[Dict[str, int]], task_name: str) -> float:
    """Submit every run, then read every result; seconds taken (results checked by the caller)."""
    start = time.perf_counter()
    ids = [backend.submit(values, flow=flow) for values in parameters]
    results = [backend.result(flow_run_id, task_name) for flow_run_id in ids]
    elapsed = time.perf_counter() - start
    all_at_once.last = results  # type: ignore[attr-defined]
    return elapsed


def noop(x: int) -> int:
    """x: a Dask task that does nothing."""
    return x


def dask_noops(client: Any, count: int) -> float:
    """Seconds for ``count`` no-op Dask tasks, submitted at once, results read one by one."""
    start = time.perf_counter()
    futures = [client.submit(noop, index, pure=False) for index in range(count)]
    assert [future.result() for future in futures] == list(range(count))
    elapsed = time.perf_counter() - start
    for future in futures:
        future.release()
    return elapsed


def warm_up(backend: Any, flow: Flow, workers: int) -> None:
    """Every worker up and holding the flow."""
    for _ in range(2):
        ids = [backend.submit({"x": 0}, flow=flow) for _ in range(workers * 4)]
        for flow_run_id in ids:
            backend.result(flow_run_id)


def rounds_of(calls: Dict[str, Callable[[], float]], rounds: int) -> Dict[str, float]:
    """Median seconds of each call over ``rounds`` interleaved rounds."""
    samples: Dict[str, List[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name].append(call())
    return {name: statistics.median(times) for name, times in samples.items()}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--heavy", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logging.getLogger("prefect").handlers.clear()
    logging.getLogger("prefect").setLevel(logging.WARNING)
    workers = args.workers
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {workers} workers, load average {load()}")

    light, heavy = one_task_flow(), cpu_flow()
    loops = loops_for(0.2)
    light_parameters = [{"x": index} for index in range(args.runs)]
    heavy_parameters = [{"loops": loops + index} for index in range(args.heavy)]
    raw_light = raw_serial(light, light_parameters)
    raw_heavy = raw_serial(heavy, heavy_parameters[: max(4, args.heavy // 4)]) * args.heavy / max(4, args.heavy // 4)

    with LocalBackend(max_workers=workers) as local, DaskBackend(n_workers=workers, threads_per_worker=1) as dask:
        for backend in (local, dask):
            warm_up(backend, light, workers)
        expected_light = [index + 1 for index in range(args.runs)]

        def timed(backend: Any, flow: Flow, parameters: List[Dict[str, int]], task_name: str, expected: Any) -> float:
            seconds = all_at_once(backend, flow, parameters, task_name)
            if expected is not None:
                assert all_at_once.last == expected, "wrong results"  # type: ignore[attr-defined]
            return seconds

        light_times = rounds_of(
            {
                "local": lambda: timed(local, light, light_parameters, "increment", expected_light),
                "dask": lambda: timed(dask, light, light_parameters, "increment", expected_light),
            },
            args.rounds,
        )
        noop_times = rounds_of({"dask": lambda: dask_noops(dask.client, args.runs)}, args.rounds)
        heavy_times = rounds_of(
            {
                "local": lambda: timed(local, heavy, heavy_parameters, "spin", None),
                "dask": lambda: timed(dask, heavy, heavy_parameters, "spin", None),
            },
            max(1, args.rounds // 2),
        )

    def line(label: str, count: int, raw: float, times: Dict[str, float]) -> None:
        print(
            f"{label:<28}{count/raw:>11.1f}{count/times['local']:>13.1f}{count/times['dask']:>12.1f}"
            f"{times['local']/times['dask']:>14.3f}{raw/times['dask']:>12.2f}"
        )

    print(f"\n{'runs/s':<28}{'raw serial':>11}{'LocalBackend':>13}{'DaskBackend':>12}{'dask/local':>14}{'dask/raw':>12}")
    line(f"{args.runs} x 1-task flow", args.runs, raw_light, light_times)
    line(f"{args.heavy} x 0.2 s CPU task", args.heavy, raw_heavy, heavy_times)
    print(
        f"{args.runs} no-op Dask tasks{'':<8}{'':>11}{'':>13}{args.runs/noop_times['dask']:>12.1f}"
        f"{light_times['local']/noop_times['dask']:>14.3f}   (the ceiling of one Dask task per run)"
    )
    print(f"\nload average at the end {load()}")
    print(
        f"dask: throughput_vs_local={light_times['local']/light_times['dask']:.3f} "
        f"cpu_heavy_vs_local={heavy_times['local']/heavy_times['dask']:.3f} "
        f"throughput_vs_raw={raw_light/light_times['dask']:.2f} "
        f"cpu_heavy_vs_raw={raw_heavy/heavy_times['dask']:.2f} "
        f"noop_tasks_vs_local={light_times['local']/noop_times['dask']:.3f}"
    )


if __name__ == "__main__":
    main()
