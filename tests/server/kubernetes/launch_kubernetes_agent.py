"""Starts prefect's own KubernetesAgent (prefect 1.4.1, unmodified) against the
Prefect Server named by ``PREFECT__CLOUD__API`` and the Kubernetes API of the
kubeconfig named by ``KUBECONFIG``.

Run by `agents.KubernetesAgentKind` as
``python launch_kubernetes_agent.py --name N --label L --namespace NS --env K=V``:
what ``prefect agent kubernetes start --name N --label L --namespace NS --env K=V``
does (``prefect/cli/agent.py``: build the agent, then ``start()``), plus the two
settings of the agent instance a CLI cannot set: ``--loop-interval`` replaces the
back-off of the polling loop (``Agent._loop_intervals``, 0.25 s to 10 s), and
``--heartbeat-period`` the agent's heartbeat (60 s), in which the KubernetesAgent
manages its Jobs (``manage_jobs``: deletes finished Jobs, fails the flow runs of
failed pods, reports pod events). SIGINT stops it as it stops the CLI.
"""

from __future__ import annotations

import argparse

from prefect.agent.kubernetes import KubernetesAgent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="agent")
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--loop-interval", type=float, default=0.1)
    parser.add_argument("--heartbeat-period", type=float, default=1.0)
    args = parser.parse_args()
    env_vars = dict(item.split("=", 1) for item in args.env)
    agent = KubernetesAgent(name=args.name, labels=list(args.label), namespace=args.namespace, env_vars=env_vars)
    agent._loop_intervals = {0: args.loop_interval, 1: args.loop_interval}
    agent.heartbeat_period = args.heartbeat_period
    agent.start()


if __name__ == "__main__":
    main()
