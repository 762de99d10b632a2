"""Kubernetes quantities: the hand-written parser against a regular-expression
reading of the grammar, on generated strings, with exact values."""

from __future__ import annotations

import re
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Optional

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lume_scheduling.adapters.testing import strategies as rs
from lume_scheduling.domain import QuantityError, is_quantity, parse_quantity
from lume_scheduling.domain.quantity import MAX_EXPONENT, quantity_value

# The grammar of the quantity.py docstring, read independently as one regex.
QUANTITY = re.compile(
    r"(?P<sign>[+-]?)"
    r"(?:(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]*))?|\.(?P<frac_only>[0-9]+))"
    r"(?:(?P<binary>[KMGTPE]i)|[eE](?P<power>[+-]?[0-9]+)|(?P<decimal>[mkMGTPE]?))",
    re.ASCII,
)
BINARY_POWERS = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
DECIMAL_POWERS = {"m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def reference_value(text: str) -> Optional[Decimal]:
    """The value of ``text`` by the regex reading, or None when it is no quantity."""
    match = QUANTITY.fullmatch(text)
    if match is None:
        return None
    sign = match["sign"]
    integer = match["int"] or "0"
    fraction = match["frac"] if match["frac"] is not None else (match["frac_only"] or "")
    base = f"{sign}{integer}.{fraction or '0'}"
    if match["binary"]:
        with localcontext() as context:
            context.prec = len(base) + 40
            return Decimal(base) * (2 ** BINARY_POWERS[match["binary"]])
    power = int(match["power"]) if match["power"] is not None else DECIMAL_POWERS[match["decimal"]]
    if abs(power) > MAX_EXPONENT:
        return None
    return Decimal(f"{base}E{power}")


def reference_fraction(text: str) -> Fraction:
    """The exact value as a Fraction, from integers only (small exponents)."""
    match = QUANTITY.fullmatch(text)
    assert match is not None
    fraction = match["frac"] if match["frac"] is not None else (match["frac_only"] or "")
    digits = int((match["int"] or "0") + fraction)
    value = Fraction(digits, 10 ** len(fraction))
    if match["sign"] == "-":
        value = -value
    if match["binary"]:
        return value * 2 ** BINARY_POWERS[match["binary"]]
    power = int(match["power"]) if match["power"] is not None else DECIMAL_POWERS[match["decimal"]]
    return value * Fraction(10) ** power


@st.composite
def quantity_like(draw: st.DrawFn) -> str:
    """Strings built from the grammar's pieces, some slightly wrong."""
    sign = draw(st.sampled_from(["", "", "+", "-", "--", "+-", " "]))
    integer = draw(st.text("0123456789", max_size=8))
    dot = draw(st.sampled_from(["", "", ".", ".."]))
    fraction = draw(st.text("0123456789", max_size=5))
    suffix = draw(
        st.one_of(
            st.sampled_from(
                list(BINARY_POWERS) + list(DECIMAL_POWERS)
                + ["KiB", "ki", "KI", "i", "e", "E+", "e-", "e1.5", " ", "Gi ", "mi", "u", "n", "Mii", "kk", "K", "Ki1", "B"]
            ),
            st.tuples(
                st.sampled_from("eE"), st.sampled_from(["", "+", "-", "++"]), st.text("0123456789", min_size=1, max_size=12)
            ).map("".join),
        )
    )
    return f"{sign}{integer}{dot}{fraction}{suffix}"


ALPHABET = "0123456789+-.eEKMGTPkmiB \u0661\u00b2"
EXAMPLES_VALID = ["1.5Gi", "512Mi", "1e3", "129e6", "100m", "0.5", "2", ".5", "5.", "+1", "-1", "1E", "1e-3", "0"]
EXAMPLES_INVALID = ["Gi", "1GiB", "1 Gi", "abc", "", ".", "+", "1e", "1e+", "1.2.3", "1ki", " 1", "1 ", "\u0661", "1e\u0661"]


class TestAgainstTheRegexReading:
    @given(text=quantity_like())
    @example(text="1e2147483647")
    @example(text="1e2147483648")
    @example(text="-1e-2147483648")
    @example(text="12345678901234567890123456789.5Ki")
    def test_grammar_built_strings(self, text: str) -> None:
        self._check(text)

    @given(text=st.text(ALPHABET, max_size=14))
    def test_arbitrary_text(self, text: str) -> None:
        self._check(text)

    @given(text=rs.quantity_texts(signed=True))
    def test_shipped_quantity_texts_are_quantities(self, text: str) -> None:
        assert reference_value(text) is not None
        self._check(text)

    @given(text=rs.invalid_quantity_texts())
    def test_shipped_invalid_quantity_texts_are_not(self, text: str) -> None:
        assert reference_value(text) is None
        self._check(text)

    @staticmethod
    def _check(text: str) -> None:
        expected = reference_value(text)
        assert is_quantity(text) is (expected is not None)
        if expected is None:
            with pytest.raises(QuantityError):
                parse_quantity(text)
            return
        value = parse_quantity(text)
        assert isinstance(value, Decimal)
        assert value == expected
        power = QUANTITY.fullmatch(text)["power"]
        if power is None or abs(int(power)) <= 400:
            assert Fraction(value) == reference_fraction(text)


class TestExamples:
    @pytest.mark.parametrize("text", EXAMPLES_VALID)
    def test_valid(self, text: str) -> None:
        assert is_quantity(text)

    @pytest.mark.parametrize("text", EXAMPLES_INVALID)
    def test_invalid(self, text: str) -> None:
        assert not is_quantity(text)
        with pytest.raises(QuantityError):
            parse_quantity(text)

    @pytest.mark.parametrize(
        "text, value",
        [
            ("1.5Gi", Decimal(3 * 2**29)),
            ("512Mi", Decimal(512 * 2**20)),
            ("1e3", Decimal(1000)),
            ("129e6", Decimal(129_000_000)),
            ("100m", Decimal("0.1")),
            ("1E", Decimal(10**18)),
            ("1Ei", Decimal(2**60)),
            (".5k", Decimal(500)),
            ("-2.5e-1", Decimal("-0.25")),
            ("1" * 40 + "Ki", Decimal(int("1" * 40) * 1024)),
        ],
    )
    def test_exact_values(self, text: str, value: Decimal) -> None:
        assert parse_quantity(text) == value

    def test_long_numbers_are_not_rounded(self) -> None:
        digits = "9" * 60
        assert parse_quantity(digits + "Ei") == Decimal(int(digits) * 2**60)
        assert parse_quantity(digits + "m") == Decimal(f"{digits[:-3]}.{digits[-3:]}")

    def test_huge_exponent_is_a_quantity_error_not_an_overflow(self) -> None:
        assert parse_quantity(f"1e{MAX_EXPONENT}") == Decimal(f"1e{MAX_EXPONENT}")
        with pytest.raises(QuantityError, match="out of range"):
            parse_quantity(f"1e{MAX_EXPONENT + 1}")
        with pytest.raises(QuantityError, match="out of range"):
            parse_quantity("1e99999999999999999999")

    @pytest.mark.parametrize("value", [1, 1.5, None, b"1", ["1"]])
    def test_only_strings_parse(self, value: object) -> None:
        with pytest.raises(QuantityError):
            parse_quantity(value)  # type: ignore[arg-type]

    def test_quantity_error_is_a_value_error(self) -> None:
        assert issubclass(QuantityError, ValueError)


class TestQuantityValue:
    @given(number=st.integers())
    def test_ints_exact(self, number: int) -> None:
        assert quantity_value(number) == Decimal(number)

    @given(number=st.floats(allow_nan=False, allow_infinity=False))
    def test_floats_as_written(self, number: float) -> None:
        value = quantity_value(number)
        assert value == Decimal(repr(number))
        assert float(value) == number

    @pytest.mark.parametrize("value", [True, False, float("nan"), float("inf"), float("-inf"), "1GiB"])
    def test_rejected(self, value: object) -> None:
        with pytest.raises(QuantityError):
            quantity_value(value)  # type: ignore[arg-type]
