"""The dependency rule (adapters -> application -> domain), checked on the source.

- `domain` imports the standard library, pydantic, yaml and its own modules. It
  may import docker-py's pure data helpers (``docker.types``, ``docker.utils``,
  ``docker.constants``, ``docker.errors``) lazily, inside a function, to check a
  host config offline; never ``docker`` itself, ``docker.api``, ``docker.client``
  or ``docker.from_env``.
- `application` imports the standard library and `lume_scheduling.domain`.
- Importing `lume_scheduling.domain` loads no prefect module.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("domain", "application")
DOCKER_DATA_HELPERS = frozenset({"types", "utils", "constants", "errors"})
DOMAIN_THIRD_PARTY = frozenset({"pydantic", "yaml"})


@dataclass(frozen=True)
class Import:
    """One module a source file imports (``from a import b`` gives ``a.b``)."""

    module: str
    level: int
    line: int
    lazy: bool


class _ImportCollector(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: List[Import] = []
        self._depth = 0

    def _in_function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _in_function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(Import(alias.name, 0, node.lineno, self._depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        for alias in node.names:
            name = f"{base}.{alias.name}" if base else alias.name
            self.found.append(Import(name, node.level, node.lineno, self._depth > 0))

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("x") and __import__("x") with a literal name.
        function = node.func
        called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
        if called in ("import_module", "__import__") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self.found.append(Import(first.value, 0, node.lineno, self._depth > 0))
        self.generic_visit(node)


def imports_of(source: str) -> List[Import]:
    """Every import in ``source``, with whether it happens inside a function."""
    collector = _ImportCollector()
    collector.visit(ast.parse(source))
    return collector.found


def violations(layer: str, source: str) -> List[str]:
    """The imports of ``source`` that break the dependency rule of ``layer``."""
    bad: List[str] = []
    for found in imports_of(source):
        where = f"line {found.line}: {'.' * found.level}{found.module}"
        if found.level > 1:
            bad.append(f"{where} (relative import out of the {layer} package)")
            continue
        if found.level == 1:
            continue  # the layer's own modules
        top, _, rest = found.module.partition(".")
        if top in sys.stdlib_module_names:
            continue
        if found.module == f"lume_scheduling.{layer}" or found.module.startswith(f"lume_scheduling.{layer}."):
            continue
        if layer == "application" and (
            found.module == "lume_scheduling.domain" or found.module.startswith("lume_scheduling.domain.")
        ):
            continue
        if layer == "domain" and top in DOMAIN_THIRD_PARTY:
            continue
        if layer == "domain" and top == "docker":
            helper = rest.partition(".")[0]
            if helper in DOCKER_DATA_HELPERS and found.lazy:
                continue
            reason = "import docker-py's data helpers lazily" if helper in DOCKER_DATA_HELPERS else "no daemon client"
            bad.append(f"{where} ({reason})")
            continue
        bad.append(f"{where} (not allowed in {layer})")
    return bad


def strategies_violations(source: str) -> List[str]:
    """Imports of the shipped Hypothesis strategies beyond stdlib, hypothesis and domain."""
    return [
        f"line {found.line}: {'.' * found.level}{found.module}"
        for found in imports_of(source)
        if found.level > 0
        or not (
            found.module.partition(".")[0] in sys.stdlib_module_names
            or found.module.partition(".")[0] == "hypothesis"
            or found.module == "lume_scheduling.domain"
            or found.module.startswith("lume_scheduling.domain.")
        )
    ]


def layer_files(layer: str) -> Iterator[Path]:
    yield from sorted((ROOT / layer).rglob("*.py"))


class TestDependencyRule:
    @pytest.mark.parametrize("layer", LAYERS)
    def test_layer_imports_only_what_it_may(self, layer: str) -> None:
        files = list(layer_files(layer))
        assert files, f"no source found under {ROOT / layer}"
        problems = {
            str(path.relative_to(ROOT)): found
            for path in files
            if (found := violations(layer, path.read_text(encoding="utf-8")))
        }
        assert problems == {}

    def test_domain_really_uses_the_docker_helpers_lazily(self) -> None:
        # Guards the checker itself: the lazy docker imports it allows are seen.
        seen = [
            found
            for path in layer_files("domain")
            for found in imports_of(path.read_text(encoding="utf-8"))
            if found.module.startswith("docker.")
        ]
        assert seen and all(found.lazy for found in seen)


class TestShippedStrategiesStayLight:
    """Embedders import the strategies without prefect or docker."""

    def test_strategies_import_only_hypothesis_and_domain(self) -> None:
        source = (ROOT / "adapters" / "testing" / "strategies.py").read_text(encoding="utf-8")
        assert strategies_violations(source) == []

    @pytest.mark.parametrize(
        "source", ["import prefect", "from docker.types import HostConfig", "from ..local import LocalBackend", "import pydantic"]
    )
    def test_checker_flags_planted_imports(self, source: str) -> None:
        assert strategies_violations(source)


class TestTheCheckerCatchesPlantedImports:
    @pytest.mark.parametrize(
        "layer, source",
        [
            ("domain", "import prefect"),
            ("domain", "from prefect.run_configs import LocalRun"),
            ("domain", "import requests"),
            ("domain", "import docker"),
            ("domain", "from docker import from_env"),
            ("domain", "def check():\n    from docker.api import APIClient"),
            ("domain", "def check():\n    import docker.client"),
            ("domain", "def check():\n    from docker import from_env"),
            ("domain", "from docker.types import HostConfig"),
            ("domain", "from lume_scheduling.application import Backend"),
            ("domain", "from lume_scheduling.adapters import LocalBackend"),
            ("domain", "from ..adapters import local"),
            ("domain", "import importlib\nimportlib.import_module('prefect')"),
            ("domain", "def later():\n    __import__('prefect.client')"),
            ("application", "import pydantic"),
            ("application", "import yaml"),
            ("application", "from lume_scheduling.adapters.local import LocalBackend"),
            ("application", "import lume_scheduling.adapters"),
            ("application", "def lazy():\n    import prefect"),
            ("application", "from ..adapters import server"),
        ],
    )
    def test_bad_import_flagged(self, layer: str, source: str) -> None:
        assert violations(layer, source), source

    @pytest.mark.parametrize(
        "layer, source",
        [
            ("domain", "from __future__ import annotations\nimport os, re, json\nfrom decimal import Decimal"),
            ("domain", "from pydantic import BaseModel\nimport yaml"),
            ("domain", "from .errors import SchedulingError\nfrom . import quantity"),
            ("domain", "def check():\n    from docker.types import HostConfig\n    from docker.utils import parse_bytes"),
            ("domain", "def check():\n    from docker.constants import DEFAULT_DOCKER_API_VERSION\n    import docker.errors"),
            ("domain", "from lume_scheduling.domain.quantity import parse_quantity"),
            ("application", "from lume_scheduling.domain import RunConfig\nfrom .ports import Backend"),
            ("application", "import warnings\nfrom abc import ABC\nfrom typing import Any"),
            ("application", "from lume_scheduling import domain"),
        ],
    )
    def test_allowed_import_passes(self, layer: str, source: str) -> None:
        assert violations(layer, source) == []

    def test_violation_names_line_and_module(self) -> None:
        source = textwrap.dedent(
            """
            import os

            def build():
                from docker.api import APIClient
            """
        )
        assert violations("domain", source) == ["line 5: docker.api.APIClient (no daemon client)"]


def _run_python(code: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *options, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


class TestImportingTheDomainLoadsNoPrefect:
    def test_importtime_lists_no_prefect_module(self) -> None:
        done = _run_python("import lume_scheduling.domain", "-X", "importtime")
        assert done.returncode == 0, done.stderr
        modules = [
            line.rsplit("|", 1)[-1].strip()
            for line in done.stderr.splitlines()
            if line.startswith("import time:") and "|" in line
        ]
        assert "lume_scheduling.domain" in modules  # the trace really is of our import
        assert [name for name in modules if name.split(".")[0] == "prefect"] == []

    @pytest.mark.parametrize("package", ["lume_scheduling.domain", "lume_scheduling.application"])
    def test_fresh_process_has_no_prefect_in_sys_modules(self, package: str) -> None:
        code = f"import json, sys, {package}; print(json.dumps(sorted(sys.modules)))"
        done = _run_python(code)
        assert done.returncode == 0, done.stderr
        loaded = json.loads(done.stdout)
        assert package in loaded
        assert [name for name in loaded if name.split(".")[0] == "prefect"] == []
