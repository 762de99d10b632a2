"""The README's example (testing with the fake), run: a LUME service tested against the
fake. The code between the markers is the documentation's code block, verbatim
(`test_the_documentation_shows_this_example` keeps them the same)."""

from __future__ import annotations

from pathlib import Path

# --- example start
import pytest

from lume_scheduling.adapters.in_memory import InMemoryBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.application import SchedulingService
from lume_scheduling.domain import FlowFailedError, FlowRunState, FlowRunTimeoutError


class PredictionFailed(Exception):
    """The model could not give a prediction."""


class ModelService:
    """A tiny LUME service: asks a registered model flow for a prediction."""

    def __init__(self, scheduling: SchedulingService, project_name: str = "lume") -> None:
        self._scheduling = scheduling
        scheduling.create_project(project_name)
        self._flow_id = scheduling.register_flow(flows.arithmetic_flow, project_name)

    def predict(self, x: float, y: float, timeout: float = 60.0) -> float:
        try:
            return self._scheduling.run_and_return(
                {"x": x, "y": y}, task_name="add", flow_id=self._flow_id, timeout=timeout
            )
        except FlowFailedError as err:
            raise PredictionFailed(f"the model failed: {err.exception_message}") from err
        except FlowRunTimeoutError as err:
            raise PredictionFailed(f"no prediction within {timeout} s") from err


@pytest.fixture
def backend():
    with InMemoryBackend(server=True) as backend:
        yield backend


@pytest.fixture
def service(backend):
    return ModelService(SchedulingService(backend))


def test_predict_runs_the_model_flow(service, backend):
    assert service.predict(5, 7) == 12  # Prefect really ran the flow
    (call,) = [call for call in backend.calls if call.operation == "run_and_return"]
    assert call.arguments["parameters"] == {"x": 5, "y": 7}
    assert call.arguments["task_name"] == "add"


def test_a_failing_model_becomes_prediction_failed(service, backend):
    backend.script_failure("arithmetic", "the model diverged")
    with pytest.raises(PredictionFailed, match="the model diverged"):
        service.predict(5, 7)


def test_a_hanging_model_times_out_and_is_cancelled(service, backend):
    backend.script_hang("arithmetic")
    with pytest.raises(PredictionFailed, match="no prediction within 0.1 s"):
        service.predict(5, 7, timeout=0.1)
    (flow_run_id,) = backend.flow_run_ids
    assert backend.get_state(flow_run_id) is FlowRunState.CANCELLED


# --- example end


def test_the_documentation_shows_this_example() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    example = source.split("# --- example start\n")[1].split("# --- example end\n")[0]
    example = example.rstrip("\n") + "\n"  # the formatter's blank lines before the marker
    docs = Path(__file__).resolve().parents[2] / "README.md"
    assert f"```python\n{example}```" in docs.read_text(encoding="utf-8")
