"""Prefect's own agents, started as processes against an `EmulatedServer`.

Not part of the server: this is how a test gets flow runs executed by prefect's
real agent and runner. An *agent kind* starts "an agent of kind X against server
E with labels L and environment V" and returns an `AgentHandle` that stops it,
ends the flow runs it started (`reap`), and can make one of them crash
(`kill_flow_run`). `LocalAgentKind` is the first kind: prefect's LocalAgent in a
subprocess (see ``launch_local_agent.py``), whose flow runs are
``python -m prefect execute flow-run`` processes. `KubernetesAgentKind` runs
prefect's KubernetesAgent against a Kubernetes API double of its own
(``tests/server/kubernetes/``), whose Jobs run ``prefect execute flow-run`` as
processes. Other kinds (prefect's DockerAgent against a container engine)
implement the same two classes and are passed where a kind is asked for.

Every agent and runner gets the environment of `prefect_environment`: the
server's address, the key that tells their requests apart, a home and prefect
home of their own (nothing is written under the user's home), and
`RUNNER_SETTINGS`, prefect's own settings tuned for tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .server import EmulatedServer

LAUNCHER = Path(__file__).with_name("launch_local_agent.py")
DEFAULT_LABELS = ("lume-services",)

# prefect 1.4.1 settings of the runners (`prefect execute flow-run`), as environment
# variables: the heartbeat in a thread of the runner rather than one more Python
# process per flow run ("process", the default), sent every second rather than
# every 30 s (the zombie killer's cut-off in tests is 30 s, not 10 minutes), and
# the check for cancellation every 0.3 s rather than every 15 s. The log batch
# interval (cloud.logging_heartbeat, 5 s) is prefect's default: logs arrive as
# they do on a real deployment, most of them after the final state.
RUNNER_SETTINGS: Dict[str, str] = {
    "PREFECT__CLOUD__HEARTBEAT_MODE": "thread",
    "PREFECT__CLOUD__HEARTBEAT_INTERVAL": "1.0",
    "PREFECT__CLOUD__CHECK_CANCELLATION_INTERVAL": "0.3",
    "PREFECT__LOGGING__LEVEL": "INFO",
}


def prefect_environment(
    server: EmulatedServer, home: Path, extra: Optional[Mapping[str, str]] = None
) -> Dict[str, str]:
    """The environment of an agent (and of the runners it starts) for ``server``.

    Args:
        server: The emulated server.
        home: A directory of the test's own: the processes' ``HOME`` and prefect
            home (prefect reads ``~/.prefect`` and may write results there).
        extra: More variables, which win (e.g. shorter heartbeats for a crash test).
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT__")}
    env.update(
        HOME=str(home),
        PREFECT__HOME_DIR=str(home / ".prefect"),
        PREFECT__USER_CONFIG_PATH=str(home / "no-user-config.toml"),
        PREFECT__BACKEND_CONFIG_PATH=str(home / "no-backend-config.toml"),
        PREFECT__BACKEND="server",
        PREFECT__CLOUD__API=server.url,
        PREFECT__CLOUD__API_KEY=server.agent_api_key,
        PYTHONUNBUFFERED="1",
    )
    env.update(RUNNER_SETTINGS)
    env.update(extra or {})
    return env


def _stop_agent_process(process: "subprocess.Popen[bytes]") -> None:
    """Stop an agent process started in a process group of its own: SIGINT first
    (the agent's own exit handler), then SIGKILL to the whole group (the agent,
    if still there, and the flow runs it started)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(10)


class AgentHandle(ABC):
    """A running agent of some kind.

    Attributes:
        name: The agent's name (its row in the server's ``agent`` table).
        labels: Its labels.
        log_path: Where its output (and its flow runs' output) goes.
    """

    def __init__(self, name: str, labels: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.labels = list(labels)
        self.log_path = log_path

    @abstractmethod
    def alive(self) -> bool:
        """Whether the agent itself still runs."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the agent and end every flow run it started; idempotent."""

    @abstractmethod
    def reap(self) -> None:
        """End the flow runs this agent started that still run (the agent goes on)."""

    @abstractmethod
    def running(self, flow_run_id: str) -> bool:
        """Whether a process (or container) of this agent still runs ``flow_run_id``."""

    @abstractmethod
    def kill_flow_run(self, flow_run_id: str, timeout: float = 30.0) -> None:
        """The process (or container) running ``flow_run_id`` dies at once, writing
        nothing: what a crash, an OOM kill or a lost node looks like to the server.

        Raises:
            TimeoutError: No process of this agent runs it within ``timeout``.
        """

    def output(self, tail: int = 4000) -> str:
        """The end of the agent's output, for a failure message."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def wait_registered(self, server: EmulatedServer, timeout: float = 60.0) -> None:
        """Wait until the agent has registered and polled the server once.

        Raises:
            RuntimeError: The agent died or did not poll within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(r.names == ["get_runs_in_queue"] for r in server.requests_of("agent")) and any(
                a["name"] == self.name for a in server.store.rows("agent")
            ):
                return
            if not self.alive():
                break
            time.sleep(0.05)
        raise RuntimeError(f"agent {self.name!r} did not start polling {server.url}:\n{self.output()}")


class AgentKind(ABC):
    """Starts agents of one kind (the fixtures take a kind, so that tests can run on
    prefect's LocalAgent, DockerAgent or KubernetesAgent alike)."""

    key: str = "abstract"

    @abstractmethod
    def start(
        self, server: EmulatedServer, labels: Sequence[str], env: Mapping[str, str], workdir: Path, name: str
    ) -> AgentHandle:
        """Start an agent against ``server``; returns at once (see `AgentHandle.wait_registered`).

        Args:
            server: The emulated server.
            labels: The agent's labels.
            env: Its environment (`prefect_environment`).
            workdir: A directory of its own (logs, import paths...).
            name: Its name.
        """


class LocalAgentKind(AgentKind):
    """prefect's LocalAgent in a subprocess; each flow run a ``prefect execute
    flow-run`` process.

    Args:
        loop_interval: Seconds between two polls of the agent.
        import_paths: Directories put on the flow runs' ``PYTHONPATH`` (prefect's
            ``--import-path``), for flows whose Module storage lives there.
    """

    key = "local"

    def __init__(self, loop_interval: float = 0.1, import_paths: Sequence[Path] = ()) -> None:
        self.loop_interval = loop_interval
        self.import_paths = list(import_paths)

    def start(
        self, server: EmulatedServer, labels: Sequence[str], env: Mapping[str, str], workdir: Path, name: str
    ) -> "LocalAgentProcess":
        workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(LAUNCHER), "--name", name, "--loop-interval", str(self.loop_interval)]
        for label in labels:
            command += ["--label", label]
        for path in self.import_paths:
            command += ["--import-path", str(path)]
        log_path = workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command, env=dict(env), cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: its flow runs die with it
            )
        return LocalAgentProcess(name, labels, log_path, process)


def _children(pid: int) -> List[int]:
    """Processes whose parent is ``pid`` (Linux: read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != b"Z":
            found.append(int(entry))
    return found


def _environ(pid: int) -> Dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            items = environ.read().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in items if b"=" in item)


class LocalAgentProcess(AgentHandle):
    """A LocalAgent process and the flow run processes it started (its children)."""

    def __init__(self, name: str, labels: Sequence[str], log_path: Path, process: "subprocess.Popen[bytes]") -> None:
        super().__init__(name, labels, log_path)
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def runner_pids(self) -> List[int]:
        """The flow run processes still running."""
        return _children(self.process.pid) if self.alive() else []

    def reap(self) -> None:
        for pid in self.runner_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _runner_of(self, flow_run_id: str) -> Optional[int]:
        for pid in self.runner_pids():
            if _environ(pid).get("PREFECT__CONTEXT__FLOW_RUN_ID") == flow_run_id:
                return pid
        return None

    def running(self, flow_run_id: str) -> bool:
        return self._runner_of(flow_run_id) is not None

    def kill_flow_run(self, flow_run_id: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self._runner_of(flow_run_id)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)
        raise TimeoutError(f"no process of agent {self.name!r} runs flow run {flow_run_id}")

    def stop(self) -> None:
        _stop_agent_process(self.process)


# --- prefect's KubernetesAgent against the Kubernetes API double ---------------------

KUBERNETES_DOUBLE_NAME = "lume_scheduling_tests_kubernetes"
KUBERNETES_DOUBLE_PATH = Path(__file__).parent.parent / "kubernetes" / "__init__.py"
# What the KubernetesAgent sets in every container itself, and the agent's own home:
# never forwarded to the runners as agent env vars.
_NOT_FORWARDED = {
    "PREFECT__BACKEND", "PREFECT__CLOUD__API", "PREFECT__CLOUD__API_KEY", "PREFECT__CLOUD__TENANT_ID",
    "PREFECT__CLOUD__AUTH_TOKEN", "PREFECT__HOME_DIR", "PREFECT__USER_CONFIG_PATH", "PREFECT__BACKEND_CONFIG_PATH",
}


def load_kubernetes_double() -> Any:
    """The Kubernetes API double (``tests/server/kubernetes/``), imported once by path."""
    import importlib.util

    if KUBERNETES_DOUBLE_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            KUBERNETES_DOUBLE_NAME, KUBERNETES_DOUBLE_PATH,
            submodule_search_locations=[str(KUBERNETES_DOUBLE_PATH.parent)],
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[KUBERNETES_DOUBLE_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[KUBERNETES_DOUBLE_NAME]


class KubernetesAgentKind(AgentKind):
    """prefect's KubernetesAgent in a subprocess (``launch_kubernetes_agent.py``),
    against a Kubernetes API double of its own; each flow run a batch/v1 Job whose
    container command (``prefect execute flow-run``) the double runs as a process.

    The runners get what a real KubernetesAgent gives a container: the Job's env
    (the agent's fixed variables, the run config's env, and the agent's env vars:
    here every ``PREFECT__`` setting of the agent's environment but its connection
    and home, e.g. `RUNNER_SETTINGS`), on top of the "image": the test's virtual
    environment, with ``PYTHONPATH`` as the agent's (Module storage flows).

    Args:
        loop_interval: Seconds between two polls of the agent.
        heartbeat_period: Seconds between two heartbeats (``manage_jobs``).
        namespace: The namespace of the Jobs.
        pull_seconds: How long each pod stays Pending.
    """

    key = "kubernetes"

    def __init__(self, loop_interval: float = 0.1, heartbeat_period: float = 1.0, namespace: str = "default",
                 pull_seconds: float = 0.0) -> None:
        self.loop_interval = loop_interval
        self.heartbeat_period = heartbeat_period
        self.namespace = namespace
        self.pull_seconds = pull_seconds

    def start(
        self, server: EmulatedServer, labels: Sequence[str], env: Mapping[str, str], workdir: Path, name: str
    ) -> "KubernetesAgentProcess":
        double = load_kubernetes_double()
        workdir.mkdir(parents=True, exist_ok=True)
        image_env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
        }
        if env.get("PYTHONPATH"):
            image_env["PYTHONPATH"] = env["PYTHONPATH"]
        api = double.KubernetesApi(workdir / f"{name}-kubernetes", image_env, pull_seconds=self.pull_seconds).start()
        try:
            kubeconfig = api.write_kubeconfig(workdir / f"{name}-kubeconfig", self.namespace)
            agent_env = {k: v for k, v in env.items() if not k.startswith("KUBERNETES_")}  # never in-cluster
            agent_env["KUBECONFIG"] = str(kubeconfig)
            command = [sys.executable, str(KUBERNETES_DOUBLE_PATH.with_name("launch_kubernetes_agent.py")),
                       "--name", name, "--namespace", self.namespace,
                       "--loop-interval", str(self.loop_interval), "--heartbeat-period", str(self.heartbeat_period)]
            for label in labels:
                command += ["--label", label]
            for key, value in sorted(env.items()):
                if key.startswith("PREFECT__") and key not in _NOT_FORWARDED:
                    command += ["--env", f"{key}={value}"]
            log_path = workdir / f"{name}.log"
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    command, env=agent_env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
        except BaseException:
            api.stop()
            raise
        return KubernetesAgentProcess(name, labels, log_path, process, api)


class KubernetesAgentProcess(AgentHandle):
    """A KubernetesAgent process and its Kubernetes API double (whose pods run the
    flow runs).

    Attributes:
        api: The `KubernetesApi` double; ``api.cluster`` holds its Jobs and pods.
    """

    def __init__(self, name: str, labels: Sequence[str], log_path: Path, process: "subprocess.Popen[bytes]",
                 api: Any) -> None:
        super().__init__(name, labels, log_path)
        self.process = process
        self.api = api

    def alive(self) -> bool:
        return self.process.poll() is None

    def threads(self) -> List[Any]:
        """The double's threads (its server and its pods' watchers)."""
        return self.api.threads()

    def _pods_of(self, flow_run_id: str) -> List[Any]:
        return [pod for pod in self.api.cluster.all_pods()
                if pod.object["metadata"]["labels"].get("prefect.io/flow_run_id") == flow_run_id]

    def running(self, flow_run_id: str) -> bool:
        return any(pod.running() for pod in self._pods_of(flow_run_id))

    def kill_flow_run(self, flow_run_id: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = [pod for pod in self._pods_of(flow_run_id) if pod.running()]
            if pods:
                for pod in pods:
                    pod.signal(signal.SIGKILL)  # the container dies: exit 137, pod Failed
                return
            time.sleep(0.02)
        raise TimeoutError(f"no pod of agent {self.name!r} runs flow run {flow_run_id}")

    def reap(self) -> None:
        self.api.cluster.reap()

    def output(self, tail: int = 4000) -> str:
        text = super().output(tail)
        for pod in self.api.cluster.all_pods()[-2:]:
            try:
                text += f"\n--- pod {pod.name} ---\n" + pod.log_path.read_text(errors="replace")[-tail:]
            except OSError:
                pass
        return text

    def stop(self) -> None:
        _stop_agent_process(self.process)
        self.api.stop()


# --- prefect's DockerAgent against a real Docker Engine API (podman) -------------------

DOCKER_LAUNCHER = Path(__file__).with_name("launch_docker_agent.py")
REPOSITORY = Path(__file__).resolve().parents[3]


class DockerAgentKind(AgentKind):
    """prefect's DockerAgent in a subprocess (``launch_docker_agent.py``), against the
    Docker Engine API of a `podman.PodmanEngine`; each flow run a real container
    running ``prefect execute flow-run``.

    The "image" is the engine's imported root file system; the agent mounts into every
    container, read-only, the host's ``/usr`` (Python), the test's virtual environment
    and this checkout (the editable install), and the emulator's import directory
    (Module storage flows). The containers are on podman's default bridge network and
    reach the emulated server at the bridge's gateway (the server listens on every
    address: ``server_bind``); the agent tells them so with ``PREFECT__CLOUD__API``
    among its env vars, which prefect lets override its own guess.

    Args:
        engine: A started `PodmanEngine`.
        loop_interval: Seconds between two polls of the agent.
        heartbeat_period: Seconds between two heartbeats.
    """

    key = "docker"
    server_bind = "0.0.0.0"

    def __init__(self, engine: Any, loop_interval: float = 0.1, heartbeat_period: float = 1.0) -> None:
        self.engine = engine
        self.loop_interval = loop_interval
        self.heartbeat_period = heartbeat_period

    def _gateway(self) -> str:
        client = self.engine.client()
        try:
            configs = client.inspect_network("podman")["IPAM"]["Config"]
        finally:
            client.close()
        return next(config["Gateway"] for config in configs if config.get("Gateway"))

    def start(
        self, server: EmulatedServer, labels: Sequence[str], env: Mapping[str, str], workdir: Path, name: str
    ) -> "DockerAgentProcess":
        workdir.mkdir(parents=True, exist_ok=True)
        venv = Path(sys.prefix)
        container_env = {
            "PATH": os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": "/tmp",
            "PREFECT__HOME_DIR": "/tmp/.prefect",
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
            "PREFECT__CLOUD__API": f"http://{self._gateway()}:{server.port}/graphql",
        }
        mounts = {"/usr", sys.base_prefix, str(venv), str(REPOSITORY)}
        if env.get("PYTHONPATH"):
            container_env["PYTHONPATH"] = env["PYTHONPATH"]
            mounts.update(p for p in env["PYTHONPATH"].split(os.pathsep) if p)
        command = [sys.executable, str(DOCKER_LAUNCHER), "--name", name, "--base-url", self.engine.base_url,
                   "--no-pull", "--loop-interval", str(self.loop_interval),
                   "--heartbeat-period", str(self.heartbeat_period)]
        for label in labels:
            command += ["--label", label]
        for path in sorted(mounts):
            command += ["--volume", f"{path}:{path}:ro"]
        forwarded = {k: v for k, v in env.items() if k.startswith("PREFECT__") and k not in _NOT_FORWARDED}
        for key, value in sorted({**forwarded, **container_env}.items()):
            command += ["--env", f"{key}={value}"]
        log_path = workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command, env=dict(env), cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return DockerAgentProcess(name, labels, log_path, process, self.engine)


class DockerAgentProcess(AgentHandle):
    """A DockerAgent process and the containers it started (labelled
    ``io.prefect.flow-run-id`` by the agent)."""

    def __init__(self, name: str, labels: Sequence[str], log_path: Path, process: "subprocess.Popen[bytes]",
                 engine: Any) -> None:
        super().__init__(name, labels, log_path)
        self.process = process
        self.engine = engine

    def alive(self) -> bool:
        return self.process.poll() is None

    def _containers(self, flow_run_id: Optional[str] = None, running: bool = True) -> List[dict]:
        label = "io.prefect.flow-run-id" + ("" if flow_run_id is None else f"={flow_run_id}")
        client = self.engine.client()
        try:
            return client.containers(all=not running, filters={"label": label})
        finally:
            client.close()

    def running(self, flow_run_id: str) -> bool:
        return bool(self._containers(flow_run_id))

    def kill_flow_run(self, flow_run_id: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self._containers(flow_run_id)
            if found:
                client = self.engine.client()
                try:
                    for container in found:
                        client.kill(container["Id"])  # SIGKILL: the container dies, exit 137
                finally:
                    client.close()
                return
            time.sleep(0.05)
        raise TimeoutError(f"no container of agent {self.name!r} runs flow run {flow_run_id}")

    def reap(self) -> None:
        self.engine.remove_containers(self._containers(running=False))

    def stop(self) -> None:
        _stop_agent_process(self.process)
        try:
            self.reap()
        except Exception:  # the engine is gone already
            pass
