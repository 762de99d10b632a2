"""Hypothesis settings for the domain's property tests, and shared fixtures.

Two profiles, both with at least 200 examples per property:

- ``ci`` (loaded when the ``CI`` environment variable is set): 200 examples, no
  deadline (shared CI machines stall), no example database (nothing written
  into the checkout), and the seed printed for any failure so it can be replayed.
- ``dev`` (otherwise): the same number of examples, keeping Hypothesis' local
  example database so that a failure found once is tried first next time.

Hypothesis settings profiles are process-wide: loading one here applies to
every Hypothesis test of the session, not only to this folder's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="module")
def job_template_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An existing YAML file holding a minimal Kubernetes Job (module-scoped, so
    Hypothesis tests can use it: it is never changed)."""
    path = tmp_path_factory.mktemp("templates") / "job.yaml"
    path.write_text(
        "apiVersion: batch/v1\nkind: Job\nspec:\n  template:\n    spec:\n"
        "      containers:\n        - name: flow\n",
        encoding="utf-8",
    )
    return path
