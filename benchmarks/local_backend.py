"""How much the local backend costs over a raw ``flow.run()``, measured in one run.

Prints, for a 1-task flow, a 10-task chain and a 100-task fan-out: the median
time of a raw ``flow.run()``, of ``LocalBackend(isolated=False).run_and_return``
and of ``LocalBackend().run_and_return`` (warm workers), with their ratios to raw;
then 200 runs of the 1-task flow submitted at once against 200 serial raw runs;
then the cold start of a worker for each multiprocessing start method; and the
cost of pickling each flow (what the per-flow cache saves on every run).

    python benchmarks/local_backend.py [--repeat 30] [--concurrent 200]

Targets: in-process <= 1.02 x raw; isolated <= 1.10 x raw on the 1-task flow;
200 concurrent runs >= 1.8 x the throughput of serial raw runs on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import pickle
import statistics
import sys
import time
from typing import Callable, Dict, List

import cloudpickle
from prefect import Flow, Parameter, task

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.local import _worker
from lume_scheduling.adapters.prefect_flows import execute_flow


@task(name="increment")
def increment(x: int) -> int:
    """x + 1."""
    return x + 1


@task(name="total")
def total(values: List[int]) -> int:
    """sum(values)."""
    return sum(values)


def one_task_flow() -> Flow:
    with Flow("bench-one") as flow:
        increment(Parameter("x", default=1))
    return flow


def chain_flow(length: int = 10) -> Flow:
    with Flow("bench-chain") as flow:
        value = Parameter("x", default=0)
        for _ in range(length):
            value = increment(value)
    return flow


def fan_out_flow(width: int = 100) -> Flow:
    with Flow("bench-fan-out") as flow:
        x = Parameter("x", default=0)
        total([increment(x) for _ in range(width - 1)])
    return flow


def median_seconds(call: Callable[[], object], repeat: int) -> float:
    call()  # warm-up (imports, worker start, flow pickling)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def interleaved_medians(calls: List[Callable[[], object]], repeat: int) -> List[float]:
    """Median seconds of each call, sampling them in turn."""
    for call in calls:
        call()  # warm-up (imports, worker start, flow pickling)
    samples: List[List[float]] = [[] for _ in calls]
    for _ in range(repeat):
        for call, times in zip(calls, samples):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return [statistics.median(times) for times in samples]


def raw_run(flow: Flow) -> object:
    state = flow.run(parameters={"x": 1}, run_on_schedule=False)
    assert state.is_successful(), state
    return state


def cold_start_seconds(method: str, flow: Flow, repeat: int = 3) -> float:
    """Start a worker with ``method``, run the 1-task flow once, stop it."""
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload([_worker.__name__])
    payload = cloudpickle.dumps(flow)
    samples = []
    for _ in range(repeat):
        alive_r, alive_w = ctx.Pipe(duplex=False)
        parent, child = ctx.Pipe()
        start = time.perf_counter()
        process = ctx.Process(target=_worker.main, args=(child, alive_r))
        process.start()
        child.close()
        parent.send_bytes(pickle.dumps((
            _worker.RUN, "cold", 1, payload, pickle.dumps({"x": 1}), dict(os.environ),
            os.getcwd(), list(sys.path), logging.WARNING, (),
        )))
        while True:
            message = pickle.loads(parent.recv_bytes())
            if message[0] == _worker.DONE:
                assert message[2].state.value == "success", message[2]
                break
        samples.append(time.perf_counter() - start)
        # A forked child holds copies of the parent's pipe ends and would never
        # read EOF: stop every worker the same blunt way.
        process.kill()
        process.join()
        parent.close()
        alive_w.close()
        alive_r.close()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--trials", type=int, default=2)
    args = parser.parse_args()
    # Prefect's stdout handler would dominate and clutter the output: raw runs
    # log nowhere, like the backend's default (records below WARNING are not sent).
    logging.getLogger("prefect").handlers.clear()
    logging.getLogger("prefect").setLevel(logging.WARNING)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, repeat={args.repeat}")
    flows: Dict[str, Flow] = {
        "1 task": one_task_flow(),
        "10-task chain": chain_flow(),
        "100-task fan-out": fan_out_flow(),
    }
    with LocalBackend(isolated=False) as in_process, LocalBackend() as isolated:
        print(f"\n{'flow':<18}{'raw ms':>9}{'in-proc ms':>12}{'ratio':>7}{'isolated ms':>13}{'ratio':>7}")
        for label, flow in flows.items():
            # Samples are interleaved so that a busy machine slows all three alike.
            raw, inp, iso = interleaved_medians(
                [
                    lambda: raw_run(flow),
                    lambda: in_process.run_and_return({"x": 1}, flow=flow),
                    lambda: isolated.run_and_return({"x": 1}, flow=flow),
                ],
                args.repeat if label != "100-task fan-out" else max(9, args.repeat // 3),
            )
            print(f"{label:<18}{raw*1e3:>9.2f}{inp*1e3:>12.2f}{inp/raw:>7.3f}{iso*1e3:>13.2f}{iso/raw:>7.3f}")

    flow = flows["1 task"]
    count = args.concurrent
    serial_times: List[float] = []
    concurrent_times: List[float] = []
    parent_cpu: List[float] = []
    with LocalBackend() as backend:
        workers = backend.max_workers
        for _ in range(workers):  # every worker up and holding the flow
            ids = [backend.submit({"x": 1}, flow=flow) for _ in range(workers * 2)]
            [backend.result(flow_run_id) for flow_run_id in ids]
        for _ in range(args.trials):
            start = time.perf_counter()
            for _ in range(count):
                raw_run(flow)
            serial_times.append(time.perf_counter() - start)
            start, cpu = time.perf_counter(), time.process_time()
            ids = [backend.submit({"x": index}, flow=flow) for index in range(count)]
            values = [backend.result(flow_run_id, "increment") for flow_run_id in ids]
            concurrent_times.append(time.perf_counter() - start)
            parent_cpu.append(time.process_time() - cpu)
            assert values == [index + 1 for index in range(count)], "wrong results"
    serial, concurrent = min(serial_times), min(concurrent_times)
    print(
        f"\n{count} runs of the 1-task flow (best of {args.trials}): serial raw {serial:.2f} s "
        f"({count/serial:.1f} runs/s); submitted at once to LocalBackend() with "
        f"{workers} workers {concurrent:.2f} s ({count/concurrent:.1f} runs/s); "
        f"throughput ratio {serial/concurrent:.2f}; the caller's process used "
        f"{min(parent_cpu):.2f} s of CPU for the {count} concurrent runs"
    )

    print("\ncold start of one worker + first 1-task run, by start method:")
    for method in ("fork", "forkserver", "spawn"):
        if method in multiprocessing.get_all_start_methods():
            print(f"  {method:<11}{cold_start_seconds(method, flow)*1e3:8.1f} ms")
    print("  (forkserver: the first worker also waits for the fork server to import prefect once)")

    print("\npickling each flow (paid once per flow object thanks to the cache):")
    for label, flow in flows.items():
        seconds = median_seconds(lambda: cloudpickle.dumps(flow), 10)
        loads = median_seconds(lambda: cloudpickle.loads(cloudpickle.dumps(flow)), 10) - seconds
        print(f"  {label:<18} dumps {seconds*1e3:7.2f} ms, loads {max(loads, 0)*1e3:7.2f} ms, "
              f"{len(cloudpickle.dumps(flow))/1024:7.1f} KiB")


if __name__ == "__main__":
    main()
