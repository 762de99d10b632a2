"""How fast the local backend runs flows against Prefect's own ``flow.run()``, measured in one run.

Prints, side by side in one process:

1. for a 1-task flow, a 10-task chain and a 100-task mapped fan-out: the median
   time of a raw ``flow.run()``, of ``LocalBackend(isolated=False).run_and_return``
   and of ``LocalBackend().run_and_return`` (warm workers, fast path for
   Prefect's context), samples interleaved, with their ratios to raw;
2. throughput: 200 runs of the 1-task flow from 8 threads against 200 serial
   raw runs, and the CPU the caller's process used for them;
3. CPU-heavy runs: 20 runs of a 0.2 s pure-Python task from 8 threads against
   20 serial raw runs;
4. the command line end to end (``lume-scheduling run examples/hello_flow.py``)
   against a script that loads the same file and calls ``flow.run()``, whole
   processes, medians of interleaved runs;
5. the cold start of a worker for each start method, and what pickling each
   flow costs (paid on every submit).

The load average is printed at the start and the end. The last line is::

    local: one_task_ratio=<float> chain_ratio=<float> fanout_ratio=<float> throughput=<float> cpu_heavy=<float>

(the isolated ratios to raw; throughput and cpu_heavy as speed-ups over serial raw runs).

    python benchmarks/local_backend.py [--repeat 30] [--concurrent 200] [--cli-repeat 20]

Targets (2 cores): 1-task <= 0.12, chain <= 0.08, fan-out <= 0.05, throughput
>= 12, cpu_heavy >= 1.8, command line <= 1.2 x the script.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import pickle
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

import cloudpickle
from prefect import Flow, Parameter, task

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.local import _worker
from lume_scheduling.adapters.local._payload import flow_payload

REPO = Path(__file__).resolve().parents[1]
THREADS = 8


@task(name="increment")
def increment(x: int) -> int:
    """x + 1."""
    return x + 1


@task(name="total")
def total(values: List[int]) -> int:
    """sum(values)."""
    return sum(values)


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


def chain_flow(length: int = 10) -> Flow:
    with Flow("bench-chain") as flow:
        value = Parameter("x", default=0)
        for _ in range(length):
            value = increment(value)
    return flow


def fan_out_flow(width: int = 100) -> Flow:
    with Flow("bench-fan-out") as flow:
        x = Parameter("x", default=0)
        total(increment.map([x] * width))
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


def median_seconds(call: Callable[[], object], repeat: int) -> float:
    call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def interleaved_medians(calls: List[Callable[[], object]], repeat: int) -> List[float]:
    """Median seconds of each call, sampling them in turn (a busy machine slows all alike)."""
    for call in calls:
        call()  # warm-up (imports, worker start)
    samples: List[List[float]] = [[] for _ in calls]
    for _ in range(repeat):
        for call, times in zip(calls, samples):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return [statistics.median(times) for times in samples]


def raw_run(flow: Flow, parameters: Dict[str, int]) -> object:
    state = flow.run(parameters=parameters, run_on_schedule=False)
    assert state.is_successful(), state
    return state


def from_threads(backend: LocalBackend, flow: Flow, parameters: List[Dict[str, int]], task_name: str) -> List[int]:
    """Run each parameter set with ``run_and_return`` from `THREADS` threads; values in order."""
    values: List[int] = [0] * len(parameters)
    cursor = iter(range(len(parameters)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            values[index] = backend.run_and_return(parameters[index], None, task_name, flow=flow)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return values


def warm_up(backend: LocalBackend, flow: Flow, parameters: Dict[str, int]) -> None:
    """Every worker up and holding the flow."""
    for _ in range(2):
        ids = [backend.submit(parameters, flow=flow) for _ in range(backend.max_workers * 2)]
        for flow_run_id in ids:
            backend.result(flow_run_id)


def cold_start_seconds(method: str, flow: Flow, repeat: int = 3) -> float:
    """Start a worker with ``method``, run the 1-task flow once, stop it."""
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload([_worker.__name__])
    payload = flow_payload(flow, list(sys.path))
    samples = []
    for _ in range(repeat):
        alive_r, alive_w = ctx.Pipe(duplex=False)
        parent, child = ctx.Pipe()
        start = time.perf_counter()
        process = ctx.Process(target=_worker.main, args=(child, alive_r))
        process.start()
        child.close()
        parent.send_bytes(pickle.dumps((
            _worker.RUN, "cold", payload.digest, payload.data, pickle.dumps({"x": 1}), dict(os.environ),
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


SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("hello_flow", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
state = module.flow.run(parameters={"name": "LUME", "n": 4})
assert state.is_successful()
"""


def cli_medians(repeat: int) -> List[float]:
    """Whole-process seconds of the command line and of the script, interleaved."""
    example = str(REPO / "examples" / "hello_flow.py")
    console = Path(sys.executable).parent / "lume-scheduling"
    env = {key: value for key, value in os.environ.items() if not key.startswith("LUME_SCHEDULING_")}
    commands = [
        [str(console), "--quiet", "run", example, "-p", "name=LUME", "-p", "n=4"],
        [sys.executable, "-c", SCRIPT, example],
    ]

    def run(command: List[str]) -> float:
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start

    for command in commands:
        run(command)  # warm the file system caches
    samples: List[List[float]] = [[], []]
    for _ in range(repeat):
        for command, times in zip(commands, samples):
            times.append(run(command))
    return [statistics.median(times) for times in samples]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--heavy", type=int, default=20)
    parser.add_argument("--cli-repeat", type=int, default=20, help="0 leaves the command line out")
    args = parser.parse_args()
    # Prefect's stdout handler would dominate and clutter the output: raw runs
    # log nowhere, like the backend's default (records below WARNING are not sent).
    logging.getLogger("prefect").handlers.clear()
    logging.getLogger("prefect").setLevel(logging.WARNING)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, repeat={args.repeat}, load average {load()}")
    flows: Dict[str, Flow] = {
        "1 task": one_task_flow(),
        "10-task chain": chain_flow(),
        "100-task fan-out": fan_out_flow(),
    }
    ratios: Dict[str, float] = {}
    with LocalBackend(isolated=False) as in_process, LocalBackend() as isolated:
        print(f"\n{'flow':<18}{'raw ms':>9}{'in-proc ms':>12}{'ratio':>7}{'isolated ms':>13}{'ratio':>7}")
        for label, flow in flows.items():
            raw, inp, iso = interleaved_medians(
                [
                    lambda: raw_run(flow, {"x": 1}),
                    lambda: in_process.run_and_return({"x": 1}, flow=flow),
                    lambda: isolated.run_and_return({"x": 1}, flow=flow),
                ],
                args.repeat if label != "100-task fan-out" else max(9, args.repeat // 3),
            )
            ratios[label] = iso / raw
            print(f"{label:<18}{raw*1e3:>9.2f}{inp*1e3:>12.2f}{inp/raw:>7.3f}{iso*1e3:>13.2f}{iso/raw:>7.3f}")

    flow = flows["1 task"]
    count = args.concurrent
    with LocalBackend() as backend:
        warm_up(backend, flow, {"x": 1})
        start = time.perf_counter()
        for index in range(count):
            raw_run(flow, {"x": index})
        serial = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        values = from_threads(backend, flow, [{"x": index} for index in range(count)], "increment")
        threaded = time.perf_counter() - start
        caller_cpu = time.process_time() - cpu
        assert values == [index + 1 for index in range(count)], "wrong results"
        workers = backend.max_workers
    throughput = serial / threaded
    print(
        f"\n{count} runs of the 1-task flow: serial raw {serial:.2f} s ({count/serial:.1f} runs/s); "
        f"from {THREADS} threads to LocalBackend() with {workers} workers {threaded:.2f} s "
        f"({count/threaded:.1f} runs/s); speed-up {throughput:.2f}; the caller's process used "
        f"{caller_cpu:.2f} s of CPU ({caller_cpu/count*1e3:.2f} ms a run)"
    )

    heavy = cpu_flow()
    loops = loops_for(0.2)
    with LocalBackend() as backend:
        warm_up(backend, heavy, {"loops": 1})
        start = time.perf_counter()
        expected = [raw_run(heavy, {"loops": loops}) for _ in range(args.heavy)]
        serial_heavy = time.perf_counter() - start
        start = time.perf_counter()
        values = from_threads(backend, heavy, [{"loops": loops}] * args.heavy, "spin")
        threaded_heavy = time.perf_counter() - start
        assert len(set(values)) == 1 and len(expected) == args.heavy
    cpu_heavy = serial_heavy / threaded_heavy
    print(
        f"{args.heavy} runs of a {loops}-loop pure-Python task (about 0.2 s): serial raw "
        f"{serial_heavy:.2f} s; from {THREADS} threads {threaded_heavy:.2f} s; speed-up {cpu_heavy:.2f}"
    )

    if args.cli_repeat > 0:
        cli, script = cli_medians(args.cli_repeat)
        print(
            f"\ncommand line `lume-scheduling run examples/hello_flow.py -p name=LUME -p n=4` "
            f"{cli:.3f} s, script loading the file and calling flow.run() {script:.3f} s "
            f"(medians of {args.cli_repeat}, interleaved): ratio {cli/script:.2f}"
        )

    print("\ncold start of one worker + first 1-task run, by start method:")
    for method in ("fork", "forkserver", "spawn"):
        if method in multiprocessing.get_all_start_methods():
            print(f"  {method:<11}{cold_start_seconds(method, flow)*1e3:8.1f} ms")
    print("  (forkserver: the first worker also waits for the fork server to import prefect once)")

    print("\npickling each flow (on every submit; a worker gets the bytes once while they do not change):")
    for label, flow in flows.items():
        seconds = median_seconds(lambda: flow_payload(flow, list(sys.path)), 10)
        loads = median_seconds(lambda: cloudpickle.loads(flow_payload(flow, list(sys.path)).data), 10) - seconds
        size = len(flow_payload(flow, list(sys.path)).data)
        print(f"  {label:<18} dumps {seconds*1e3:7.2f} ms, loads {max(loads, 0)*1e3:7.2f} ms, {size/1024:7.1f} KiB")

    print(f"\nload average at the end {load()}")
    print(
        f"local: one_task_ratio={ratios['1 task']:.4f} chain_ratio={ratios['10-task chain']:.4f} "
        f"fanout_ratio={ratios['100-task fan-out']:.4f} throughput={throughput:.2f} cpu_heavy={cpu_heavy:.2f}"
    )


if __name__ == "__main__":
    main()
