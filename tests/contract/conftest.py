"""The contract tests' session summary: which capabilities each suite checked."""

from lume_scheduling.adapters.testing.plugin import pytest_terminal_summary  # noqa: F401
