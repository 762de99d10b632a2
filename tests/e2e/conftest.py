"""Fixtures for driving the installed ``lume-scheduling`` console script in a subprocess.

Every call runs with HOME pointing at an empty temporary directory, without any
``LUME_SCHEDULING_*`` variable of the caller, and fails the test if anything was
written under that HOME.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import pytest

SCRIPT = Path(sys.executable).parent / "lume-scheduling"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Completed:
    """What one run of the console script did."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """The ``lume-scheduling: error: ...`` lines on stderr."""
        return [line for line in self.err.splitlines() if line.startswith("lume-scheduling: error: ")]


Cli = Callable[..., Completed]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """An empty HOME for the subprocess; nothing may be written there."""
    path = tmp_path / "home"
    path.mkdir()
    yield path
    written = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    assert written == [], f"the command line wrote under HOME: {written}"


@pytest.fixture
def cli_env(home: Path) -> Dict[str, str]:
    """The subprocess environment: ours without LUME_SCHEDULING_*, HOME in a temporary directory."""
    assert SCRIPT.exists(), f"console script not installed next to {sys.executable}"
    base = {name: value for name, value in os.environ.items() if not name.startswith("LUME_SCHEDULING_")}
    base["HOME"] = str(home)
    return base


@pytest.fixture
def lume(cli_env: Dict[str, str]) -> Cli:
    """Run the installed console script: ``lume(*args, env={...}, timeout=90)``."""
    base = cli_env

    def run(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 90) -> Completed:
        completed = subprocess.run(
            [str(SCRIPT), *args],
            env={**base, **(env or {})},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Completed(completed.returncode, completed.stdout, completed.stderr)

    return run


@pytest.fixture
def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a file under the test's temporary directory and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write

