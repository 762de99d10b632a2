"""An emulated Prefect 1 Server, faithful to the server's own source, for flow runs
executed by prefect's own agents and runner.

Test code, loaded by path (``tests/`` is not a package; see ``load`` in
``tests/server/conftest.py``). No Prefect Server can run here (Hasura is in no
registry), so this package answers the same GraphQL API over real HTTP, rule by
rule as ``PrefectHQ/server`` does; each rule cites the server file it follows.

Modules, in the order a request meets them:

- ``server``: `EmulatedServer`, the HTTP front (a free port of 127.0.0.1), its
  request log and the background services.
- ``faults``: scripted failures (HTTP errors, GraphQL errors, delays) aimed at
  one kind of client.
- ``routes``: the GraphQL schema of the server's own resolvers (inputs, payloads)
  and their execution; table queries go to ``hasura``.
- ``hasura``: Hasura's generated queries over the tables (where, order_by,
  relationships, aggregates).
- ``rules``: what ``prefect_server.api`` does: creating flows and flow runs,
  setting states (no version locking), cancelling, task runs, agents, logs.
- ``store`` and ``schema``: the tables and the database triggers (a flow run's
  insert creates its task runs; a state's insert updates its run).
- ``services``: the zombie killer and Lazarus.
- ``settings``: the deployment's configuration, with the server's defaults.
- ``harness``: `Emulated`, a server and the agents started against it (the tests' fixtures).
- ``agents`` and ``launch_local_agent``: not the server: prefect's real agents
  started against it (`LocalAgentKind` first; other kinds plug in).
"""

from .harness import IMAGE, Emulated
from .agents import (
    DEFAULT_LABELS, RUNNER_SETTINGS, AgentHandle, AgentKind, DockerAgentKind, KubernetesAgentKind, LocalAgentKind,
    load_kubernetes_double, prefect_environment,
)
from .faults import AGENT, ANY, CLIENT, RUNNER, Faults
from .hasura import Hasura, HasuraError
from .routes import Request, Routes
from .rules import LAZARUS_EXCLUDE, SCHEDULED_STATES, Rules
from .server import AGENT_API_KEY, EmulatedServer, LoggedRequest
from .services import Lazarus, Towel, ZombieKiller
from .settings import Settings
from . import podman
from .store import TASK_RUN_CREATED, Store

__all__ = [
    "AGENT", "AGENT_API_KEY", "ANY", "DockerAgentKind", "Emulated", "IMAGE", "AgentHandle", "AgentKind", "CLIENT", "DEFAULT_LABELS", "EmulatedServer",
    "Faults", "Hasura", "HasuraError", "KubernetesAgentKind", "LAZARUS_EXCLUDE", "Lazarus", "LocalAgentKind", "LoggedRequest",
    "RUNNER", "RUNNER_SETTINGS", "Request", "Routes", "Rules", "SCHEDULED_STATES", "Settings", "Store",
    "TASK_RUN_CREATED", "Towel", "ZombieKiller", "load_kubernetes_double", "prefect_environment",
]
