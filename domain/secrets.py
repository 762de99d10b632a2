"""Keeping secrets out of what we show: run config env values are masked in
messages, errors and log lines.

Env values shorter than `MIN_SECRET_LENGTH` are left alone: masking "1" or
"on" everywhere would garble every message, and such values are not secrets.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Tuple

MASK = "**********"
MIN_SECRET_LENGTH = 4


def secret_values(env: Optional[Mapping[str, str]]) -> Tuple[str, ...]:
    """The env values to mask, longest first (so that a value containing
    another is masked whole)."""
    values = {value for value in (env or {}).values() if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH}
    return tuple(sorted(values, key=len, reverse=True))


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by `MASK`."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


__all__ = ["MASK", "MIN_SECRET_LENGTH", "mask_text", "secret_values"]
