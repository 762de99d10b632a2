"""A run's log records reach the caller's logging, tagged with the run id;
run config env values never appear in a log line."""

from __future__ import annotations

import logging
import os

import pytest
from prefect import Flow, task

from lume_scheduling.adapters.local import LOGGER_NAME, LocalBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowFailedError

SECRET = "hunter2-not-for-logs"


@task(name="divide_by_zero")
def divide_by_zero() -> float:
    return 1 / 0


with Flow("dividing") as dividing_flow:
    divide_by_zero()


class TestForwardedRecords:
    def test_records_of_a_run_reach_the_caller_tagged_with_its_id(
        self, isolated: LocalBackend, local_flows, caplog
    ) -> None:
        caplog.set_level(logging.DEBUG)
        flow_run_id = isolated.submit(
            {"secret_name": "LUME_TEST_SECRET"}, flow=local_flows.logging, env={"LUME_TEST_SECRET": SECRET}
        )
        assert isolated.result(flow_run_id, "log_lines") == "logged"
        mine = [record for record in caplog.records if getattr(record, "flow_run_id", None) == flow_run_id]
        messages = {(record.name, record.getMessage()) for record in mine}
        assert ("prefect.TaskRunner", "Task 'log_lines': Starting task run...") in messages
        assert any(message == "prefect logger says hello" for _, message in messages)
        assert ("user.module", "user logger sees **********") in messages
        # DEBUG records were forwarded too, still masked.
        assert ("user.module", "debug line with **********") in messages
        assert any(record.levelno == logging.DEBUG and record.name.startswith("prefect") for record in mine)
        # They were emitted in the worker process and re-emitted here.
        assert {record.process for record in mine} != {os.getpid()}

    def test_env_values_never_appear_in_any_log_line_at_debug(self, backend: LocalBackend, caplog) -> None:
        caplog.set_level(logging.DEBUG)
        value = backend.run_and_return(
            {"name": "LUME_TEST_SECRET"}, None, "read_env", flow=flows.environment_flow, env={"LUME_TEST_SECRET": SECRET}
        )
        assert value == SECRET  # the run did see it
        assert caplog.records, "no record reached the caller"
        assert SECRET not in caplog.text
        assert all(SECRET not in record.getMessage() for record in caplog.records)

    def test_a_failing_task_logs_its_traceback_with_secrets_masked(
        self, isolated: LocalBackend, caplog
    ) -> None:
        caplog.set_level(logging.INFO, logger=LOGGER_NAME)
        with pytest.raises(Exception):
            isolated.run({"message": f"bad token {SECRET}"}, flow=flows.failing_flow, env={"TOKEN": SECRET})
        errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
        assert errors and any("ValueError" in (record.exc_text or "") for record in errors)
        assert SECRET not in caplog.text

    def test_a_traceback_from_a_worker_names_the_file_of_code_sent_by_value(
        self, isolated: LocalBackend, caplog
    ) -> None:
        caplog.set_level(logging.INFO, logger=LOGGER_NAME)
        with pytest.raises(FlowFailedError):
            isolated.run({}, flow=dividing_flow)
        tracebacks = [record.exc_text for record in caplog.records if record.exc_text]
        # This module is loaded by path: its functions travel by value.
        assert any(f'File "{__file__}", line' in text and "in divide_by_zero" in text for text in tracebacks), tracebacks
        assert all("<dynamic-code>" not in text for text in tracebacks)

    def test_records_below_the_loggers_level_are_not_forwarded(
        self, isolated: LocalBackend, local_flows, caplog
    ) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
        isolated.run({"secret_name": "LUME_TEST_SECRET"}, flow=local_flows.logging, env={"LUME_TEST_SECRET": SECRET})
        levels = {record.levelno for record in caplog.records if hasattr(record, "flow_run_id")}
        assert levels == {logging.WARNING}

    def test_in_process_records_keep_their_loggers_and_run_id(self, in_process: LocalBackend, caplog) -> None:
        caplog.set_level(logging.INFO)
        flow_run_id = in_process.submit({"x": 1}, flow=flows.arithmetic_flow)
        in_process.wait(flow_run_id)
        assert any(
            getattr(record, "flow_run_id", None) == flow_run_id and record.name == "prefect.TaskRunner"
            for record in caplog.records
        )
