"""The fake keeps env values out of the reprs of what it records."""

from __future__ import annotations

from lume_scheduling.adapters.in_memory import InMemoryBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import RunConfig

SECRET = "fake-secret-token-value"


def test_recorded_calls_and_requests_mask_env_values() -> None:
    with InMemoryBackend(server=False) as backend:
        backend.run_and_return({}, flow=flows.arithmetic_flow, env={"TOKEN": SECRET})
        backend.run_and_return({}, {"env": {"TOKEN": SECRET}}, flow=flows.arithmetic_flow)
        backend.run_and_return({}, RunConfig(env={"TOKEN": SECRET}), flow=flows.arithmetic_flow)
        shown = repr(backend.calls) + str(backend.calls) + repr(backend.submitted)
        assert SECRET not in shown
        assert shown.count("'TOKEN': '**********'") >= 3
        # The values themselves are kept: a test can still assert on them.
        assert backend.calls[0].arguments["env"] == {"TOKEN": SECRET}
        assert backend.submitted[1].run_config.env == {"TOKEN": SECRET}
