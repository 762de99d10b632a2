"""A minimal Kubernetes API double: batch/v1 Jobs run as local processes.

Test code, loaded by path like the emulator (``load_kubernetes_double`` in
``tests/server/emulator/agents.py``). It speaks what prefect 1.4.1's
KubernetesAgent and the kubernetes python client use (create, read, list and
delete a namespaced Job; list its pods and their events; a pod's log), checks
every Job against the batch/v1 schema and the API server's own rules, and runs
each Job's container command (``prefect execute flow-run``) as a process, so
that prefect's real runner executes the flow run.

Modules:

- ``api``: `KubernetesApi`, the HTTP front and its kubeconfig.
- ``validation``: what the API server refuses, and how (400/422 ``Status``).
- ``cluster``: Jobs, pods and events; the job controller and the "kubelet".
- ``launch_kubernetes_agent``: starts prefect's KubernetesAgent against it.
"""

from .api import KubernetesApi, field_selector_matches, label_selector_matches
from .cluster import Cluster, Pod
from .validation import KUBERNETES_VERSION, Refusal, check_job

__all__ = [
    "Cluster", "KUBERNETES_VERSION", "KubernetesApi", "Pod", "Refusal", "check_job",
    "field_selector_matches", "label_selector_matches",
]
