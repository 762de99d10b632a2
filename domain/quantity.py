"""Kubernetes resource quantities (``1.5Gi``, ``100m``, ``129e6``), parsed exactly.

The grammar is the one of ``resource.Quantity`` in Kubernetes' apimachinery::

    <quantity>        ::= <signedNumber><suffix>
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <signedInteger> | "E" <signedInteger>
    <signedNumber>    ::= <number> | <sign><number>
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <sign>            ::= "+" | "-"

Values are exact however many digits are written. An exponent beyond
+-`MAX_EXPONENT` is rejected: Kubernetes keeps the scale in 32 bits.

The parser is a hand-written scanner rather than a regular expression, so that the
property tests can check it against an independent regular-expression reading.
"""

from __future__ import annotations

from decimal import MAX_EMAX, MIN_EMIN, Decimal, localcontext
from typing import Union

BINARY_SUFFIXES: dict[str, int] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
DECIMAL_SUFFIXES: dict[str, Decimal] = {
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# Largest exponent accepted (``1e2147483647``): Kubernetes keeps a quantity's scale
# in a 32-bit integer, so anything beyond cannot be a Kubernetes quantity.
MAX_EXPONENT = 2**31 - 1


class QuantityError(ValueError):
    """The text is not a Kubernetes quantity."""


def _digits_end(text: str, start: int) -> int:
    """Index just past the run of ASCII digits starting at ``start``."""
    end = start
    while end < len(text) and text[end] in "0123456789":
        end += 1
    return end


def _suffix_exponent(suffix: str, text: str) -> int:
    """The power of ten a decimal suffix or exponent stands for (``k`` -> 3, ``e6`` -> 6)."""
    if suffix in DECIMAL_SUFFIXES:
        return DECIMAL_SUFFIXES[suffix].adjusted()
    if len(suffix) > 1 and suffix[0] in "eE":
        exponent = suffix[1:]
        body = exponent[1:] if exponent[0] in "+-" else exponent
        if body and _digits_end(body, 0) == len(body):
            power = int(exponent)
            if abs(power) > MAX_EXPONENT:
                raise QuantityError(
                    f"{text!r} has an exponent out of range: at most {MAX_EXPONENT} "
                    "either way (Kubernetes keeps the scale in 32 bits)"
                )
            return power
    raise QuantityError(
        f"{text!r} has an unknown suffix {suffix!r}: expected one of "
        "Ki, Mi, Gi, Ti, Pi, Ei, m, k, M, G, T, P, E or an exponent such as e6"
    )


def parse_quantity(text: str) -> Decimal:
    """Parse a Kubernetes quantity string into its exact decimal value.

    The value is exact whatever the number of digits (no rounding to the default
    28-digit decimal context).

    Args:
        text: The quantity as written, e.g. ``"1.5Gi"``, ``"100m"``, ``"129e6"``.

    Returns:
        The value as a `Decimal` (bytes for memory, cores for CPU).

    Raises:
        QuantityError: ``text`` does not follow the quantity grammar, or its
            exponent is beyond +-`MAX_EXPONENT`; the message says which part is
            wrong.
    """
    if not isinstance(text, str):
        raise QuantityError(f"expected a string, got {type(text).__name__}")
    if not text:
        raise QuantityError("a quantity cannot be empty")
    position = 1 if text[0] in "+-" else 0
    integer_end = _digits_end(text, position)
    fraction_start = fraction_end = integer_end
    if integer_end < len(text) and text[integer_end] == ".":
        fraction_start = integer_end + 1
        fraction_end = _digits_end(text, fraction_start)
    if integer_end == position and fraction_end == fraction_start:
        raise QuantityError(f"{text!r} does not start with a number")
    number = text[:fraction_end]
    if number.endswith("."):
        number += "0"
    if number.lstrip("+-").startswith("."):
        number = number.replace(".", "0.", 1)
    suffix = text[fraction_end:]
    if suffix in BINARY_SUFFIXES:
        with localcontext() as context:
            # Enough digits for the exact product (2**60 has 19 digits).
            context.prec = len(number) + 20
            context.Emax = MAX_EMAX
            context.Emin = MIN_EMIN
            return Decimal(number) * BINARY_SUFFIXES[suffix]
    # Built from text, the value is exact: no context rounding applies.
    return Decimal(f"{number}E{_suffix_exponent(suffix, text)}")


def is_quantity(text: str) -> bool:
    """Tell whether ``text`` follows the Kubernetes quantity grammar."""
    try:
        parse_quantity(text)
    except QuantityError:
        return False
    return True


def quantity_value(value: Union[str, int, float]) -> Decimal:
    """The exact value of a resource given as a quantity string or a number.

    Raises:
        QuantityError: ``value`` is a bool, a non-finite number, or a string that is
            not a quantity.
    """
    if isinstance(value, bool):
        raise QuantityError("a boolean is not a quantity")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        decimal = Decimal(repr(value))
        if not decimal.is_finite():
            raise QuantityError(f"{value!r} is not a finite number")
        return decimal
    return parse_quantity(value)
