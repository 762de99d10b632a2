"""The container engine of the ``container_engine`` tests (`podman.PodmanEngine`):
a real Docker Engine API that runs real containers, and leaves nothing behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

CONFTEST = sys.modules[next(name for name in sys.modules if name.endswith("server.conftest"))]
PODMAN = CONFTEST.emulator_module.podman

pytestmark = pytest.mark.container_engine


def test_a_container_runs_the_hosts_python_from_the_imported_image(container_engine: Any) -> None:
    client = container_engine.client()
    try:
        version = client.version()
        assert version["ApiVersion"] == "1.41"
        container = client.create_container(
            container_engine.image,
            command=[sys.executable, "-c", "import sys; print(sys.prefix)"],
            host_config=client.create_host_config(binds={p: {"bind": p, "mode": "ro"} for p in
                                                         {"/usr", sys.base_prefix, sys.prefix}}),
        )
        client.start(container["Id"])
        assert client.wait(container["Id"], timeout=120)["StatusCode"] == 0
        assert client.logs(container["Id"]).decode().strip() == sys.prefix
        client.remove_container(container["Id"])
    finally:
        client.close()


def _netavark_chains() -> bool:
    return any("NETAVARK" in rules for rules in PODMAN._iptables_rules().values())


def test_a_stopped_engine_leaves_no_process_storage_chain_or_cgroup(container_engine: Any, tmp_path: Path) -> None:
    # A second engine of its own (the session's one keeps running): what it adds, it removes.
    had_var_lib = Path("/var/lib/containers").exists()
    had_chains = _netavark_chains()
    engine = PODMAN.PodmanEngine(tmp_path / "engine", "localhost/lume-scheduling-engine-test:1").start()
    try:
        client = engine.client()
        try:
            container = client.create_container(engine.image, command=["/bin/sh", "-c", "sleep 600"],
                                                host_config=client.create_host_config(
                                                    binds={"/usr": {"bind": "/usr", "mode": "ro"}}))
            client.start(container["Id"])
        finally:
            client.close()
        process = engine._process
        assert process is not None and process.poll() is None
    finally:
        engine.stop()
    assert process.poll() is not None
    assert not (tmp_path / "engine" / "root").exists() and not (tmp_path / "engine" / "run").exists()
    assert not engine._short.exists()
    assert Path("/var/lib/containers").exists() == had_var_lib
    assert _netavark_chains() == had_chains
    assert not any(line.split()[4].startswith(str(tmp_path)) for line in Path("/proc/self/mountinfo").read_text().splitlines())


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PODMAN.shutil, "which", lambda tool: None if tool == "runc" else f"/usr/bin/{tool}")
    problem = PODMAN.start_failure()
    assert problem is not None and "runc" in problem and "podman" not in problem.split(" not found")[0]
