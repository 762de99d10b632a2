"""Many runs at once on a bounded pool; nothing lost when a worker dies; close()
and garbage collection leave no process or thread behind."""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.local._runs import RunEnded
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import BackendUnavailableError, FlowRunState


class TestRunEnded:
    def test_every_waiter_passes_once_it_is_set(self) -> None:
        ended = RunEnded()
        passed = []
        waiters = [threading.Thread(target=lambda: passed.append(ended.wait())) for _ in range(8)]
        for waiter in waiters:
            waiter.start()
        assert not ended.is_set()
        ended.set()
        for waiter in waiters:
            waiter.join(30)
        assert passed == [True] * 8
        assert ended.is_set() and ended.wait() and ended.wait(0) and ended.wait(0.01)

    def test_a_wait_that_times_out_says_it_has_not_ended(self) -> None:
        ended = RunEnded()
        assert ended.wait(0) is False
        assert ended.wait(0.01) is False
        assert ended.wait(-1) is False
        assert not ended.is_set()


class TestConcurrency:
    def test_two_hundred_submissions_at_once_all_finish_right(self, isolated: LocalBackend, local_flows) -> None:
        ids = [isolated.submit({"x": index}, flow=local_flows.increment) for index in range(200)]
        assert [isolated.result(flow_run_id, "increment", timeout=120) for flow_run_id in ids] == [
            index + 1 for index in range(200)
        ]
        assert isolated._stats()["workers_started"] == 2

    def test_never_more_workers_than_max_workers(self, local_flows) -> None:
        with LocalBackend(max_workers=2) as backend:
            ids = [backend.submit({"seconds": 0.05, "value": i}, flow=local_flows.sleepy) for i in range(8)]
            peak = 0
            while not all(backend.get_state(i).is_final for i in ids):
                peak = max(peak, len(multiprocessing.active_children()))
                time.sleep(0.005)
            assert peak <= 2
            assert [backend.result(i, "sleep_then_echo") for i in ids] == list(range(8))

    def test_runs_overlap_on_two_workers(self, local_flows) -> None:
        with LocalBackend(max_workers=2) as backend:
            ids = [backend.submit({"seconds": 0.4}, flow=local_flows.interval) for _ in range(4)]
            spans = sorted(backend.result(flow_run_id, "interval", timeout=60) for flow_run_id in ids)
        # Two runs at a time: some run started before the one before it ended.
        assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))

    def test_a_worker_dying_mid_run_loses_nothing_else(self, isolated: LocalBackend, local_flows) -> None:
        before = [isolated.submit({"x": i}, flow=flows.arithmetic_flow) for i in range(10)]
        crash = isolated.submit({"code": 9}, flow=local_flows.crash_exit)
        after = [isolated.submit({"x": i}, flow=flows.arithmetic_flow) for i in range(10, 20)]
        assert isolated.wait(crash, 60) is FlowRunState.CRASHED
        assert [isolated.result(i, "add", timeout=60) for i in before + after] == [i + 2 for i in range(20)]
        # The pool healed: a replacement worker was started, and still at most two live.
        assert isolated._stats()["workers_started"] >= 3
        assert isolated._stats()["workers_alive"] <= 2
        assert isolated.run_and_return({"x": 1}, None, "add", flow=flows.arithmetic_flow) == 3


class TestClose:
    def test_close_leaves_no_child_process_and_no_thread(self, local_flows) -> None:
        threads_before = set(threading.enumerate())
        backend = LocalBackend(max_workers=2)
        running = backend.submit({"seconds": 60}, flow=flows.hanging_flow)
        finished = backend.submit({"x": 1}, flow=flows.arithmetic_flow)
        backend.wait(finished, 30)
        assert multiprocessing.active_children()
        backend.close()
        assert multiprocessing.active_children() == []
        assert set(threading.enumerate()) == threads_before
        # The run table (get_state itself is refused after close).
        assert backend._runs.get(running).state is FlowRunState.CANCELLED
        assert backend._runs.get(finished).state is FlowRunState.SUCCESS
        with pytest.raises(BackendUnavailableError, match="closed"):
            backend.get_state(running)
        backend.close()  # idempotent

    def test_a_closed_backend_refuses_new_runs(self) -> None:
        backend = LocalBackend(max_workers=1)
        backend.close()
        with pytest.raises(BackendUnavailableError, match="closed"):
            backend.submit({}, flow=flows.arithmetic_flow)

    @pytest.mark.parametrize("isolated", [True, False], ids=["isolated", "in-process"])
    def test_garbage_collection_closes_the_backend(self, isolated: bool) -> None:
        threads_before = set(threading.enumerate())
        backend = LocalBackend(max_workers=2, isolated=isolated)
        backend.submit({"seconds": 60}, flow=flows.hanging_flow)
        assert backend.run_and_return({"x": 1}, None, "add", flow=flows.arithmetic_flow) == 3
        del backend
        gc.collect()
        deadline = time.monotonic() + 5
        while set(threading.enumerate()) != threads_before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert multiprocessing.active_children() == []
        assert set(threading.enumerate()) == threads_before

    def test_an_unused_backend_starts_nothing(self) -> None:
        threads_before = set(threading.enumerate())
        with LocalBackend() as backend:
            assert backend._stats()["workers_started"] == 0
            assert set(threading.enumerate()) == threads_before


class TestInterpreterExit:
    def test_exit_without_close_stops_every_worker(self, tmp_path) -> None:
        script = tmp_path / "forgets_to_close.py"
        script.write_text(textwrap.dedent(
            """
            import weakref

            # A finalizer registered before multiprocessing is imported runs after
            # multiprocessing's exit hook, which joins child processes.
            class Anchor:
                pass

            anchor = Anchor()
            weakref.finalize(anchor, lambda: None)

            import os
            from prefect import Flow, task
            from lume_scheduling.adapters.local import LocalBackend
            from lume_scheduling.adapters.testing import flows

            @task(name="pid")
            def pid():
                return os.getpid()

            with Flow("pid") as pid_flow:
                pid()

            if __name__ == "__main__":
                backend = LocalBackend(max_workers=2)
                print(backend.run_and_return({}, None, "pid", flow=pid_flow), flush=True)
                backend.submit({"seconds": 60}, flow=flows.hanging_flow)
                backend.run_and_return({"x": 1}, flow=flows.arithmetic_flow)
            """
        ))
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        worker_pid = int(done.stdout.split()[0])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(worker_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"worker {worker_pid} outlived its interpreter")
