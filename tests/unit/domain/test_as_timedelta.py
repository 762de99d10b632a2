"""Reading a time-out given as a timedelta or as seconds: `as_timedelta`."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lume_scheduling.domain import as_timedelta

# timedelta holds at most 999999999 days.
MAX_SECONDS = timedelta.max.total_seconds()


class TestAccepted:
    def test_none_means_no_time_out(self) -> None:
        assert as_timedelta(None) is None

    @given(delta=st.timedeltas(min_value=timedelta(0)))
    def test_timedelta_kept(self, delta: timedelta) -> None:
        assert as_timedelta(delta) == delta

    @given(seconds=st.integers(0, 10**12) | st.floats(0, 10**12, allow_nan=False))
    def test_seconds(self, seconds: float) -> None:
        assert as_timedelta(seconds) == timedelta(seconds=seconds)


class TestRejected:
    @given(seconds=st.integers(max_value=-1) | st.floats(max_value=-1e-6, allow_infinity=False))
    def test_negative_seconds(self, seconds: float) -> None:
        with pytest.raises(ValueError, match="negative"):
            as_timedelta(seconds)

    def test_negative_timedelta(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            as_timedelta(timedelta(seconds=-1))

    @pytest.mark.parametrize("seconds", [float("nan"), float("inf"), float("-inf")])
    def test_not_finite(self, seconds: float) -> None:
        with pytest.raises(ValueError, match="finite"):
            as_timedelta(seconds)

    @given(seconds=st.floats(min_value=MAX_SECONDS * 2, allow_infinity=False) | st.integers(min_value=10**15))
    def test_too_large_is_a_value_error_not_an_overflow(self, seconds: float) -> None:
        with pytest.raises(ValueError, match="too large"):
            as_timedelta(seconds)

    @pytest.mark.parametrize("value", [True, False, "10", b"10", Decimal("1"), [1], object()])
    def test_other_types_are_a_type_error(self, value: Any) -> None:
        with pytest.raises(TypeError, match="timedelta or a number"):
            as_timedelta(value)

    def test_the_argument_is_named(self) -> None:
        with pytest.raises(ValueError, match="^wait_timeout "):
            as_timedelta(-1, "wait_timeout")
        with pytest.raises(TypeError, match="^wait_timeout "):
            as_timedelta("1", argument="wait_timeout")
