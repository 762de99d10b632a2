"""Many threads scheduling through one SchedulingService over one fake: every
run ends, with its own result; none is lost or mixed up."""

from __future__ import annotations

import threading
from typing import Dict, List, Tuple

from prefect import Flow, Parameter

from lume_scheduling.adapters.in_memory import InMemoryBackend
from lume_scheduling.adapters.testing.flows import square
from lume_scheduling.application import SchedulingService
from lume_scheduling.domain import FlowRunState

THREADS = 8
RUNS_PER_THREAD = 100

# The cheapest real flow with an input: one parameter, one task (Prefect's
# per-run overhead grows with the number of tasks).
with Flow("square_one") as square_one_flow:
    square(Parameter("x"))


class TestConcurrentRuns:
    def test_every_run_ends_with_its_own_result(self) -> None:
        backend = InMemoryBackend()
        service = SchedulingService(backend)
        service.create_project("lume")
        flow_id = service.register_flow(square_one_flow, "lume")
        barrier = threading.Barrier(THREADS)
        lock = threading.Lock()
        seen: Dict[int, Tuple[str, object]] = {}
        errors: List[BaseException] = []

        def schedule(thread: int) -> None:
            try:
                barrier.wait(10)
                for index in range(RUNS_PER_THREAD):
                    x = thread * 1000 + index
                    if index % 2:  # both ways in: the seed's call and the lifecycle
                        flow_run_id = service.submit({"x": x}, flow_id=flow_id)
                        value = service.result(flow_run_id, "square", timeout=10)
                    else:
                        value = service.run_and_return(
                            {"x": x}, task_name="square", flow_id=flow_id
                        )
                        flow_run_id = "?"
                    with lock:
                        seen[x] = (flow_run_id, value)
            except BaseException as err:  # reported by the test's thread
                errors.append(err)

        threads = [threading.Thread(target=schedule, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []

        expected_xs = {n * 1000 + i for n in range(THREADS) for i in range(RUNS_PER_THREAD)}
        assert set(seen) == expected_xs
        assert {x: value for x, (_, value) in seen.items()} == {x: x * x for x in expected_xs}

        # The backend's own record agrees: 800 distinct runs, each final, each
        # holding the square of the x it was asked with.
        run_ids = backend.flow_run_ids
        assert len(run_ids) == len(set(run_ids)) == THREADS * RUNS_PER_THREAD
        asked = {request.parameters["x"] for request in backend.submitted}
        assert asked == expected_xs
        for flow_run_id in run_ids:
            record = backend.get_result(flow_run_id)
            assert record.state is FlowRunState.SUCCESS
            x = record.values["x"]
            assert record.values["square-1"] == x * x
        for x, (flow_run_id, _) in seen.items():
            if flow_run_id != "?":
                assert backend.get_result(flow_run_id).values["x"] == x
