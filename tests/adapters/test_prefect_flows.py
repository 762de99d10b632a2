"""adapters/prefect_flows.py: running a flow here and reading its states as records."""

from __future__ import annotations

import threading
from datetime import timedelta

import pendulum
from prefect import Flow, Parameter, task
from prefect.schedules import IntervalSchedule

from lume_scheduling.adapters.prefect_flows import execute_flow
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowRunState, TaskRunState


@task(name="stamp")
def stamp(value: int) -> int:
    return value


class TestScheduledFlows:
    def test_a_flow_with_a_schedule_runs_once_instead_of_blocking(self) -> None:
        schedule = IntervalSchedule(
            start_date=pendulum.now("utc").add(days=1), interval=timedelta(days=1)
        )
        with Flow("scheduled", schedule=schedule) as scheduled:
            stamp(Parameter("value", default=7))
        outcome: dict = {}
        runner = threading.Thread(
            target=lambda: outcome.update(record=execute_flow(scheduled, {}, flow_run_id="s-1")),
            daemon=True,
        )
        runner.start()
        runner.join(20)
        # Prefect's own flow.run() would sleep until tomorrow's scheduled start.
        assert not runner.is_alive(), "the scheduled flow blocked"
        assert outcome["record"].state is FlowRunState.SUCCESS
        assert outcome["record"].select("stamp") == 7


class TestRecords:
    def test_success_keeps_values_by_slug_and_names(self) -> None:
        record = execute_flow(flows.arithmetic_flow, {"x": 5, "y": 7}, flow_run_id="r-1")
        assert record.flow_run_id == "r-1"
        assert record.flow_name == "arithmetic"
        assert record.values == {"x": 5, "y": 7, "add-1": 12, "add_more-1": 22, "multiply-1": 35}

    def test_a_failed_task_gives_its_exception_type_and_message(self) -> None:
        record = execute_flow(flows.failing_flow, {}, flow_run_id="r-2")
        assert record.state is FlowRunState.FAILED
        assert record.exception_type == "ValueError"
        assert "kaboom" in (record.message or "")
        (explode,) = [run for run in record.task_runs if run.name == "explode"]
        assert explode.state is TaskRunState.FAILED

    def test_prefect_refusing_the_parameters_is_a_failed_record_not_an_exception(self) -> None:
        record = execute_flow(flows.arithmetic_flow, {"nope": 1}, flow_run_id="r-3")
        assert record.state is FlowRunState.FAILED
        assert record.exception_type == "ValueError"
        assert "nope" in (record.message or "")

    def test_mapped_children_keep_their_index(self) -> None:
        record = execute_flow(flows.mapped_flow, {"values": [2, 3]}, flow_run_id="r-4")
        assert record.values["square-1"] == [4, 9]
        assert record.mapped_value("square-1", 0) == 4
        assert record.mapped_value("square-1", 1) == 9
