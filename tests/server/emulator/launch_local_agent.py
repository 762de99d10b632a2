"""Starts prefect's own LocalAgent (prefect 1.4.1, unmodified but for one method)
against the Prefect Server named by ``PREFECT__CLOUD__API``.

Run by `agents.LocalAgentKind` as ``python launch_local_agent.py --name N --label L``;
SIGINT stops it as it stops ``prefect agent local start``. The agent starts each
flow run as ``python -m prefect execute flow-run`` (prefect's CloudFlowRunner and
CloudTaskRunner), with the environment this process was given plus the run's.

The one change: prefect's LocalAgent refuses a flow run whose run config is not a
``LocalRun`` (or ``UniversalRun``), and DockerBackend / KubernetesBackend runs carry
a ``DockerRun`` / ``KubernetesRun``. Here such a run is started as a local process
with that run config's env and labels, as the container would get them: the fast
stand-in for a container engine. The Docker and Kubernetes agent kinds run those
run configs with prefect's DockerAgent and KubernetesAgent instead.

Settings of the agent instance a CLI cannot set: ``--loop-interval`` replaces the
back-off of the polling loop (``Agent._loop_intervals``, 0.25 s to 10 s), and
``--heartbeat-period`` the agent's heartbeat (60 s), which also reaps the flow run
processes that ended.
"""

from __future__ import annotations

import argparse
from typing import Any, Type

from prefect.agent.local import LocalAgent
from prefect.run_configs import DockerRun, KubernetesRun, LocalRun, RunConfig
from prefect.serialization.run_config import RunConfigSchema


class LocalAgentForContainerRuns(LocalAgent):
    """prefect's LocalAgent, which also runs DockerRun and KubernetesRun flow runs
    (as local processes with their env and labels)."""

    def _get_run_config(self, flow_run: Any, run_config_cls: Type[RunConfig]) -> RunConfig:
        if getattr(flow_run, "run_config", None) is not None:
            run_config = RunConfigSchema().load(flow_run.run_config)
            if isinstance(run_config, (DockerRun, KubernetesRun)):
                return LocalRun(env=run_config.env, labels=run_config.labels)
        return super()._get_run_config(flow_run, run_config_cls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="agent")
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--import-path", action="append", default=[])
    parser.add_argument("--loop-interval", type=float, default=0.1)
    parser.add_argument("--heartbeat-period", type=float, default=1.0)
    args = parser.parse_args()
    agent = LocalAgentForContainerRuns(
        name=args.name,
        labels=list(args.label),
        import_paths=list(args.import_path),
        hostname_label=False,
        show_flow_logs=True,
    )
    agent._loop_intervals = {0: args.loop_interval, 1: args.loop_interval}
    agent.heartbeat_period = args.heartbeat_period
    agent.start()


if __name__ == "__main__":
    main()
