"""Masking run config env values in what a flow run reports."""

from __future__ import annotations

from typing import Dict, List

from hypothesis import given
from hypothesis import strategies as st

from lume_scheduling.domain import FlowRunResult, FlowRunState, TaskRun, TaskRunState
from lume_scheduling.domain.secrets import MASK, MIN_SECRET_LENGTH, mask_text, secret_values

TEXT = st.text(alphabet="abcXYZ-_ 0123", max_size=30)


class TestSecretValues:
    def test_short_values_are_not_secrets_and_longer_ones_come_first(self) -> None:
        assert secret_values({"A": "on", "B": "token-1", "C": "token-1-long", "D": "abc"}) == ("token-1-long", "token-1")
        assert secret_values(None) == ()

    @given(env=st.dictionaries(st.text(min_size=1, max_size=3), TEXT), text=TEXT)
    def test_no_secret_survives_masking(self, env: Dict[str, str], text: str) -> None:
        secrets = secret_values(env)
        inserted = text + "".join(secrets) + text
        masked = mask_text(inserted, secrets)
        for secret in secrets:
            assert secret not in masked.replace(MASK, "\0")
        assert all(len(secret) >= MIN_SECRET_LENGTH for secret in secrets)


class TestMaskedRecords:
    @given(secret=st.text(alphabet="xyz0", min_size=MIN_SECRET_LENGTH, max_size=8), messages=st.lists(TEXT, max_size=3))
    def test_the_run_and_task_messages_are_masked(self, secret: str, messages: List[str]) -> None:
        task_runs = tuple(
            TaskRun(f"t-{i}", "t", TaskRunState.FAILED, message=f"{text}{secret}{text}") for i, text in enumerate(messages)
        )
        record = FlowRunResult("run", None, FlowRunState.FAILED, task_runs, message=f"boom {secret}")
        masked = record.masked((secret,))
        assert secret not in (masked.message or "").replace(MASK, "\0")
        assert all(secret not in (run.message or "").replace(MASK, "\0") for run in masked.task_runs)
        assert [run.slug for run in masked.task_runs] == [run.slug for run in record.task_runs]
        assert masked.failure() is not None and secret not in str(masked.failure()).replace(MASK, "\0")

    def test_a_record_without_secrets_is_returned_as_it_is(self) -> None:
        record = FlowRunResult("run", None, FlowRunState.SUCCESS, message="fine")
        assert record.masked(()) is record
        assert record.masked(("token",)) is record
