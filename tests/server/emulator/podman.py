"""`PodmanEngine`: a real Docker Engine API, served by podman, for prefect's DockerAgent.

Not part of the emulated server: the container engine the Docker agent kind
(`agents.DockerAgentKind`) starts flow runs on. ``podman system service`` serves
the Docker Engine API (1.41) on a unix socket inside the test's directory; docker-py
and prefect's unmodified DockerAgent talk to it as to dockerd.

Everything podman keeps is inside that directory: its configuration
(``CONTAINERS_CONF``, ``CONTAINERS_STORAGE_CONF``), its storage (graph root and run
root, "vfs" driver: plain directories, no overlay mounts), its temporary files and
its network configuration. What podman writes to fixed system paths (runc's state
in ``/run/runc``, netavark's ``/run/containers/networks`` and ``/run/netns``,
``/var/tmp``) lands on tmpfs mounts of a private mount namespace the service runs
in (``unshare --mount``): they, and every mount podman makes, end with it. The
cgroups podman makes (``libpod_parent`` below each controller, "cgroupfs" manager)
are removed when the engine stops, if they were not there before it.

What these machines need (measured): crun fails ("cgroups in hybrid mode"); runc
works once the bundle's ``process.rlimits`` are dropped (the sandbox lacks
CAP_SYS_RESOURCE), which `RUNTIME_WRAPPER` does before it execs runc. Nothing can
be pulled, so the image is imported from a nearly empty root file system whose
``/usr`` (the host's Python) and the test's virtual environment are bind-mounted
read-only into each container (the agent's volumes).

`start_failure` tells why an engine cannot start (podman or runc missing, the
service not answering), for the fixture to fail (with ``CI``) or skip with.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

# The OCI runtime podman is given: runc, after dropping the rlimits podman puts in
# every bundle (setrlimit above the hard limit needs CAP_SYS_RESOURCE, which the
# sandbox lacks), and with its state under the run root rather than /run/runc.
RUNTIME_WRAPPER = """#!/bin/sh
bundle=""
prev=""
for arg in "$@"; do
  case "$prev" in --bundle|-b) bundle="$arg";; esac
  case "$arg" in --bundle=*) bundle="${arg#--bundle=}";; esac
  prev="$arg"
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  "@PYTHON@" -c 'import json, sys
path = sys.argv[1]
with open(path) as f:
    spec = json.load(f)
spec.get("process", {}).pop("rlimits", None)
with open(path, "w") as f:
    json.dump(spec, f)' "$bundle/config.json" || exit 1
fi
exec "@RUNC@" "$@"
"""

# The service runs in a mount namespace of its own, with tmpfs over the system paths
# podman, runc and netavark write to.
NAMESPACE_SCRIPT = """set -e
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
exec "$@"
"""


def start_failure() -> Optional[str]:
    """Why no engine can start here, or None if the tools are there."""
    missing = [tool for tool in ("podman", "runc", "iptables", "unshare", "mount") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (apt-get install -y podman runc iptables)"
    if os.geteuid() != 0:
        return "the container engine tests run podman as root (private mount namespace, runc)"
    return None


class EngineError(RuntimeError):
    """The engine could not start; the message holds podman's output."""


class PodmanEngine:
    """``podman system service`` on a unix socket in ``workdir``.

    Args:
        workdir: The test's directory; everything podman keeps goes below it.
        image: The name the local image is imported under (the flow runs' image).

    Attributes:
        base_url: ``unix://...``, for docker-py and the DockerAgent's ``base_url``.
        image: The imported image.
    """

    def __init__(self, workdir: Path, image: str) -> None:
        self.workdir = workdir
        self.image = image
        self._process: Optional["subprocess.Popen[bytes]"] = None
        # Unix socket paths (the service's, conmon's attach sockets below the run
        # root) are limited to 108 bytes: a short link under /tmp leads to workdir.
        self._short = Path(tempfile.mkdtemp(prefix="pm", dir="/tmp"))
        self._created_var_lib = not Path("/var/lib/containers").exists()
        self._new_cgroups = not any(Path("/sys/fs/cgroup").glob("*/libpod_parent"))
        # The bridge network's firewall chains and IP forwarding are the host's (the
        # flow runs must reach the emulated server): undone at stop if new.
        self._new_chains = not any("NETAVARK" in rules for rules in _iptables_rules().values())
        self._ip_forward = _read(IP_FORWARD)
        self.base_url = ""

    # --- configuration -------------------------------------------------------------

    def _write_config(self) -> None:
        base = self.workdir
        base.mkdir(parents=True, exist_ok=True)
        for name in ("root", "run", "tmp", "networks", "volumes"):
            (base / name).mkdir(exist_ok=True)
        link = self._short / "e"
        if not link.exists():
            link.symlink_to(base)
        runc = shutil.which("runc") or "/usr/bin/runc"
        wrapper = base / "runtime"
        wrapper.write_text(RUNTIME_WRAPPER.replace("@PYTHON@", shutil.which("python3") or "/usr/bin/python3")
                           .replace("@RUNC@", runc))
        wrapper.chmod(0o755)
        short = link
        (base / "containers.conf").write_text(
            "[containers]\n"
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{short}/run/events.log"\n'
            'runtime = "wrapped"\n'
            f'tmp_dir = "{short}/tmp"\n'
            f'volume_path = "{short}/volumes"\n'
            f'image_copy_tmp_dir = "{short}/tmp"\n'
            "[engine.runtimes]\n"
            f'wrapped = ["{wrapper}"]\n'
            "[network]\n"
            f'network_config_dir = "{short}/networks"\n'
        )
        (base / "storage.conf").write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'graphroot = "{short}/root"\n'
            f'runroot = "{short}/run"\n'
        )

    def environment(self) -> dict:
        """The environment every podman command of this engine runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERS_", "XDG_"))}
        env.update(
            CONTAINERS_CONF=str(self.workdir / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(self.workdir / "storage.conf"),
            TMPDIR=str(self.workdir / "tmp"),
            HOME=str(self.workdir),
        )
        return env

    def _podman(self, *args: str, input: Optional[bytes] = None, timeout: float = 120.0) -> str:
        command = ["unshare", "--mount", "sh", "-c", NAMESPACE_SCRIPT, "namespace", "podman", *args]
        done = subprocess.run(command, input=input, env=self.environment(), capture_output=True, timeout=timeout)
        if done.returncode != 0:
            raise EngineError(f"podman {' '.join(args)} failed ({done.returncode}): "
                              f"{done.stderr.decode(errors='replace')[-2000:]}")
        return done.stdout.decode(errors="replace")

    def _rootfs(self) -> bytes:
        """A tar of a nearly empty root file system: mount points, and the merged-/usr
        links a Debian binary expects (the host's /usr is mounted at run time)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, mode in (("tmp", 0o1777), ("etc", 0o755), ("proc", 0o555), ("sys", 0o555),
                               ("dev", 0o755), ("usr", 0o755), ("root", 0o700), ("run", 0o755), ("var", 0o755)):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
            for name in ("bin", "sbin", "lib", "lib64"):
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, f"usr/{name}"
                tar.addfile(info)
            etc = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "etc/group": b"root:x:0:\n",
                   "etc/hosts": b"127.0.0.1 localhost\n"}
            for name, data in etc.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    # --- life cycle ----------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> "PodmanEngine":
        """Configure, import the image, start the service and wait until it answers.

        Raises:
            EngineError: A step failed; the message holds podman's own words.
        """
        import docker

        self._write_config()
        rootfs = self.workdir / "rootfs.tar"
        rootfs.write_bytes(self._rootfs())
        self._podman("import", str(rootfs), self.image)
        socket_path = self._short / "e" / "docker.sock"
        self.base_url = f"unix://{socket_path}"
        log = open(self.workdir / "service.log", "ab")
        try:
            self._process = subprocess.Popen(
                ["unshare", "--mount", "sh", "-c", NAMESPACE_SCRIPT, "namespace",
                 "podman", "system", "service", "--time=0", self.base_url],
                env=self.environment(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EngineError(f"podman system service exited ({self._process.returncode}): {self.output()}")
            if socket_path.exists():
                try:
                    client = docker.APIClient(base_url=self.base_url, version="auto", timeout=30)
                    try:
                        client.ping()
                        return self
                    finally:
                        client.close()
                except Exception as error:  # not answering yet
                    last = error
            time.sleep(0.1)
        self.stop()
        raise EngineError(f"podman system service did not answer within {timeout} s ({last!r}): {self.output()}")

    def client(self) -> "docker.APIClient":  # type: ignore[name-defined]  # noqa: F821
        """A docker-py low-level client of this engine (close it)."""
        import docker

        return docker.APIClient(base_url=self.base_url, version="auto", timeout=60)

    def containers(self) -> List[dict]:
        """Every container of the engine (running or not)."""
        client = self.client()
        try:
            return client.containers(all=True)
        finally:
            client.close()

    def output(self, tail: int = 3000) -> str:
        try:
            return (self.workdir / "service.log").read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def remove_containers(self, containers: Optional[List[Dict[str, Any]]] = None) -> None:
        """Kill and remove ``containers`` (docker-py's listing rows), or every
        container (the end of a test's flow runs)."""
        client = self.client()
        try:
            for container in client.containers(all=True) if containers is None else containers:
                try:
                    client.remove_container(container["Id"], force=True)
                except Exception:  # already gone (auto_remove)
                    pass
        finally:
            client.close()

    def stop(self) -> None:
        """Remove every container, stop the service, and delete what podman kept;
        idempotent."""
        if self._process is not None and self._process.poll() is None:
            try:
                self.remove_containers()
            except Exception:
                pass
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(10)
        self._process = None
        # The blob-info cache of `podman import` goes to /var/lib/containers/cache for
        # root whatever the configuration says: removed if this engine created it.
        if self._created_var_lib:
            shutil.rmtree("/var/lib/containers", ignore_errors=True)
        if self._new_chains:
            _remove_netavark_rules()
        if self._ip_forward is not None and _read(IP_FORWARD) != self._ip_forward:
            Path(IP_FORWARD).write_text(self._ip_forward)
        if self._new_cgroups:
            _remove_cgroups(Path("/sys/fs/cgroup").glob("*/libpod_parent"))
        shutil.rmtree(self.workdir / "root", ignore_errors=True)
        shutil.rmtree(self.workdir / "run", ignore_errors=True)
        shutil.rmtree(self._short, ignore_errors=True)


IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _iptables_rules() -> dict:
    """``{table: iptables -S output}`` of the filter and nat tables ("" if unreadable)."""
    rules = {}
    for table in ("filter", "nat"):
        try:
            done = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, timeout=30)
            rules[table] = done.stdout if done.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            rules[table] = ""
    return rules


def _remove_netavark_rules() -> None:
    """Delete netavark's chains and the rules that jump to them."""
    for table, text in _iptables_rules().items():
        lines = text.splitlines()
        for line in lines:
            parts = shlex.split(line)
            if parts[:1] == ["-A"] and "NETAVARK" not in parts[1] and any("NETAVARK" in p for p in parts[2:]):
                subprocess.run(["iptables", "-t", table, "-D", *parts[1:]], capture_output=True, timeout=30)
        chains = [line.split()[1] for line in lines if line.startswith("-N ") and "NETAVARK" in line]
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True, timeout=30)
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True, timeout=30)


def _remove_cgroups(roots: "Iterable[Path]") -> None:
    """Remove empty cgroup directories, deepest first (a cgroup is removed with rmdir)."""
    for root in roots:
        for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [root]:
            try:
                path.rmdir()
            except OSError:
                pass
