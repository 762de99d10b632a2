"""close() on a server backend: every later call is refused, and a wait in
progress in another thread stops at once instead of polling on."""

from __future__ import annotations

import threading
import time
from typing import Any, List

import pytest

from lume_scheduling.adapters.server import DockerBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import BackendUnavailableError, FlowRunState


def test_a_wait_in_another_thread_stops_when_the_backend_is_closed(emulator: Any) -> None:
    # Long polls: without the close, the waiting thread would sleep up to 5 s at a time.
    backend = DockerBackend(emulator.config(poll_interval=5.0, poll_max_interval=5.0))
    backend.create_project("lume")
    flow_id = backend.register_flow(flows.hanging_flow, "lume", no_url=True)
    flow_run_id = backend.submit({"seconds": 30}, flow_id=flow_id)
    raised: List[BaseException] = []

    def wait() -> None:
        try:
            backend.wait(flow_run_id, timeout=30)
        except BaseException as err:  # checked in the test's thread
            raised.append(err)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)  # the waiter is between two polls
    started = time.monotonic()
    backend.close()
    waiter.join(10)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 2.0
    assert len(raised) == 1 and isinstance(raised[0], BackendUnavailableError)
    assert "closed" in str(raised[0])
    with pytest.raises(BackendUnavailableError, match="closed"):
        backend.get_state(flow_run_id)
    # The run goes on, on the server: another backend still sees it.
    with DockerBackend(emulator.config()) as other:
        assert other.get_state(flow_run_id) in (FlowRunState.SCHEDULED, FlowRunState.RUNNING)
        assert other.cancel(flow_run_id) is True
