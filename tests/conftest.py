"""Test-wide set-up: the contract suite's plugin (its fixtures, assert rewriting
of the shipped suite, and the end-of-session capability summary)."""

pytest_plugins = ["lume_scheduling.adapters.testing.plugin"]
