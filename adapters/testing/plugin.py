"""pytest plugin for embedders running the backend contract suite.

Enable it in the top-level ``conftest.py`` of your tests::

    pytest_plugins = ["lume_scheduling.adapters.testing.plugin"]

It provides the suite's fixtures (``project_name``, ``hanging_flow``,
``run_config_fields``, ``target``, ``submissions``), so that tests outside a
`BackendContractSuite` subclass can use them too, and it prints, at the end of
the session, which capabilities each contract suite ran with (each test also
records them as the junit property ``backend_capabilities``). It also has pytest
rewrite the suite's asserts, so a failing contract test shows the values it
compared; for that, the plugin must load before anything imports the suite.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

import pytest

# The suite's asserts explain their failures only if pytest rewrites them, which
# it does for test modules and plugins but not for other installed modules.
pytest.register_assert_rewrite("lume_scheduling.adapters.testing.contract")

from lume_scheduling.adapters.testing import flows  # noqa: E402
from lume_scheduling.adapters.testing.contract import (  # noqa: E402
    CAPABILITIES_KEY,
    DEFAULT_PROJECT_NAME,
    FlowTargets,
    spy_on_submissions,
)
from lume_scheduling.application import Backend, BackendCapabilities, FlowRunRequest  # noqa: E402

_REPORTED_KEY: "pytest.StashKey[bool]" = pytest.StashKey()
_ALL_CAPABILITIES = tuple(sorted(f.name for f in dataclasses.fields(BackendCapabilities)))

__all__ = [
    "hanging_flow",
    "project_name",
    "pytest_terminal_summary",
    "run_config_fields",
    "submissions",
    "target",
]


@pytest.fixture
def project_name() -> str:
    """The project flows are registered in, on backends with ``server``."""
    return DEFAULT_PROJECT_NAME


@pytest.fixture
def hanging_flow() -> Any:
    """A flow whose run does not end until cancelled or timed out."""
    return flows.hanging_flow


@pytest.fixture
def run_config_fields() -> Dict[str, Any]:
    """Fields a run config of the backend needs, besides labels and env."""
    return {}


@pytest.fixture
def target(backend: Backend, project_name: str) -> FlowTargets:
    """``target(flow)`` -> the ``flow=``/``flow_id=`` argument naming ``flow``."""
    return FlowTargets(backend, project_name)


@pytest.fixture
def submissions(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> List[FlowRunRequest]:
    """Every request that reached the backend's ``_submit`` hook during the test."""
    return spy_on_submissions(backend, monkeypatch)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say which capabilities every contract suite of the session checked."""
    suites = config.stash.get(CAPABILITIES_KEY, {})
    if not suites or config.stash.get(_REPORTED_KEY, False):
        return
    config.stash[_REPORTED_KEY] = True  # once, even if registered twice
    terminalreporter.section("lume-scheduling backend contract")
    for suite, (backend_type, names) in sorted(suites.items()):
        absent = [name for name in _ALL_CAPABILITIES if name not in names]
        terminalreporter.write_line(
            f"{suite} ({backend_type}): checked with {', '.join(names) or 'no capabilities'}"
            + (f"; checked without {', '.join(absent)}" if absent else "")
        )
