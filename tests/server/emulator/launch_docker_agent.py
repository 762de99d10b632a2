"""Starts prefect's own DockerAgent (prefect 1.4.1, unmodified) against the Prefect
Server named by ``PREFECT__CLOUD__API`` and the Docker Engine API at ``--base-url``.

Run by `agents.DockerAgentKind` as
``python launch_docker_agent.py --name N --label L --base-url unix://S --no-pull
--volume H:C:ro --env K=V``: what ``prefect agent docker start`` does with the same
options (``prefect/cli/agent.py``: build the agent, then ``start()``), plus the two
settings of the agent instance a CLI cannot set: ``--loop-interval`` replaces the
back-off of the polling loop (``Agent._loop_intervals``, 0.25 s to 10 s), and
``--heartbeat-period`` the agent's heartbeat (60 s; the DockerAgent pings the engine
in it). SIGINT stops it as it stops the CLI.
"""

from __future__ import annotations

import argparse

from prefect.agent.docker import DockerAgent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="agent")
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--volume", action="append", default=[])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--no-pull", action="store_true")
    parser.add_argument("--loop-interval", type=float, default=0.1)
    parser.add_argument("--heartbeat-period", type=float, default=1.0)
    args = parser.parse_args()
    agent = DockerAgent(
        name=args.name,
        labels=list(args.label),
        env_vars=dict(item.split("=", 1) for item in args.env),
        base_url=args.base_url,
        no_pull=args.no_pull,
        volumes=list(args.volume),
        show_flow_logs=True,
        docker_client_timeout=120,
    )
    agent._loop_intervals = {0: args.loop_interval, 1: args.loop_interval}
    agent.heartbeat_period = args.heartbeat_period
    agent.start()


if __name__ == "__main__":
    main()
