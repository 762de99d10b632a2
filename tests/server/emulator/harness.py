"""`Emulated`: an emulated server with prefect's agents of one kind against it, as
the tests, the CLI's end-to-end tests and the benchmarks use it."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

from .agents import DEFAULT_LABELS, AgentHandle, AgentKind, LocalAgentKind, prefect_environment
from .server import EmulatedServer
from .settings import Settings

IMAGE = "ghcr.io/slac-ml/lume-services:1.0"
_NAMES = itertools.count(1)


class Emulated:
    """A running emulated server and the agents started against it.

    Args:
        workdir: A directory of its own (agents' homes and logs, `import_dir`).
        agent_kind: The kind of agent `start_agent` starts (prefect's LocalAgent
            by default).
        settings: The server's configuration (`Settings.for_tests()` by default).
        agent: Start one agent with ``labels`` at once.
        labels: That agent's labels.
        agent_env: Extra environment of that agent and its runners.

    Attributes:
        server: The `EmulatedServer`; ``store`` its tables; ``url`` its address.
        agents: Every agent started, in order; ``agent`` the first one.
        import_dir: A directory on the flow runs' ``PYTHONPATH`` (LocalAgent), for
            test modules holding flows with Module storage.
    """

    def __init__(
        self,
        workdir: Path,
        agent_kind: Optional[AgentKind] = None,
        settings: Optional[Settings] = None,
        agent: bool = True,
        labels: Sequence[str] = DEFAULT_LABELS,
        agent_env: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.workdir = workdir
        self.import_dir = workdir / "importable"
        self.import_dir.mkdir(parents=True, exist_ok=True)
        self.agent_kind = agent_kind or LocalAgentKind()
        # An agent kind whose flow runs are containers says where the server must listen.
        self.server = EmulatedServer(settings=settings, bind=getattr(self.agent_kind, "server_bind", "127.0.0.1")).start()
        self.store = self.server.store
        self.url = self.server.url
        self.agents: List[AgentHandle] = []
        if agent:
            self.start_agent(labels, env=agent_env)

    @property
    def agent(self) -> AgentHandle:
        if not self.agents:
            raise RuntimeError("no agent was started against this emulator")
        return self.agents[0]

    def start_agent(
        self,
        labels: Sequence[str] = DEFAULT_LABELS,
        env: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        kind: Optional[AgentKind] = None,
    ) -> AgentHandle:
        """Start one more agent (of ``kind``, else this emulator's kind)."""
        name = name or f"agent-{next(_NAMES)}"
        home = self.workdir / f"{name}-home"
        extra = {"PYTHONPATH": str(self.import_dir), **(env or {})}
        handle = (kind or self.agent_kind).start(
            self.server, labels, prefect_environment(self.server, home, extra), self.workdir, name
        )
        self.agents.append(handle)
        return handle

    def config(self, **overrides: Any) -> Any:
        """`PrefectServerConfig` for this server, with short poll intervals."""
        from lume_scheduling.adapters.server import PrefectServerConfig

        fields: dict = dict(
            api_url=self.url,
            default_image=IMAGE,
            request_timeout=5.0,
            request_retries=1,
            request_backoff=0.05,
            poll_interval=0.05,
            poll_backoff=1.5,
            poll_max_interval=0.2,
            cancel_timeout=10.0,
            agent_check_after=None,
            # Prefect's runner sends its last log batch at exit, moments after the
            # final state; tests that delay it (slow_down) ask for a longer tail.
            log_tail_quiet=0.25,
        )
        fields.update(overrides)
        return PrefectServerConfig(**fields)

    def crash_flow_run(self, flow_run_id: str, notice_after: float = 3.0, timeout: float = 60.0) -> None:
        """The process running ``flow_run_id`` dies, and the server notices it after
        ``notice_after`` seconds rather than 10 minutes.

        The zombie killer and Lazarus get cut-offs of ``notice_after`` seconds (and
        turns every 0.2 s) from the moment of the kill until Lazarus has put the run
        back to Scheduled; then the settings are restored, so that the rerun an agent
        starts is not mistaken for a dead one while its process starts.

        Raises:
            TimeoutError: No agent runs it, or Lazarus did not reschedule it in time.
        """
        before = self.server.settings
        agent = next((a for a in self.agents if a.running(flow_run_id)), None)
        if agent is None:
            raise TimeoutError(f"no agent runs flow run {flow_run_id}")
        self.server.settings = before.replace(
            zombie_killer_loop_seconds=0.2, zombie_heartbeat_cutoff_seconds=notice_after,
            lazarus_loop_seconds=0.2, lazarus_heartbeat_cutoff_seconds=notice_after, services=True,
        )
        try:
            agent.kill_flow_run(flow_run_id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                run = self.store.get("flow_run", flow_run_id) or {}
                if run.get("times_resurrected") and run.get("state") != "Running":
                    return
                time.sleep(0.05)
            raise TimeoutError(f"Lazarus did not reschedule flow run {flow_run_id} within {timeout} s")
        finally:
            self.server.settings = before

    def reap(self) -> None:
        """End every flow run the agents started that still runs."""
        for agent in self.agents:
            agent.reap()

    def reset(self, settings: Optional[Settings] = None) -> None:
        """Ready for the next test: flow runs ended, a fresh database (the agents'
        rows kept: they are still polling), faults and request log cleared."""
        self.reap()
        self.server.reset(settings)

    def threads(self) -> List[threading.Thread]:
        """The server's threads and those of its agents' helpers (e.g. a Kubernetes API double)."""
        helpers = [t for agent in self.agents for t in getattr(agent, "threads", lambda: [])()]
        return self.server.threads() + helpers

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.server.stop()
