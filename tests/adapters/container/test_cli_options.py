"""Options of the command line checked as the library checks the same values."""

from __future__ import annotations

import click
import pytest

from lume_scheduling.adapters import cli
from lume_scheduling.domain import as_timedelta


class TestTimeOuts:
    @pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "1e300", "soon", ""])
    def test_what_the_library_refuses_is_refused(self, text: str) -> None:
        with pytest.raises(click.BadParameter):
            cli.SECONDS.convert(text, None, None)

    def test_zero_is_refused_too(self) -> None:
        # The library waits 0 s; the command line needs time for the run to start.
        with pytest.raises(click.BadParameter, match="above 0"):
            cli.SECONDS.convert("0", None, None)

    @pytest.mark.parametrize("text", ["0.5", "1", "600", "1e3"])
    def test_a_finite_positive_number_is_taken(self, text: str) -> None:
        seconds = cli.SECONDS.convert(text, None, None)
        assert seconds == float(text)
        assert as_timedelta(seconds) is not None
