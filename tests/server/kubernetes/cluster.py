"""The state of the Kubernetes API double: Jobs, their pods and events, and what the
job controller and the kubelet do with them.

A Job the API accepts gets what the API server adds (uid, resourceVersion,
creationTimestamp, the defaults of ``pkg/apis/batch/v1/defaults.go`` and
``pkg/apis/core/v1/defaults.go`` that a reader of the Job sees, the
``controller-uid`` / ``job-name`` labels and selector of
``pkg/registry/batch/job/strategy.go``). Its controller
(``pkg/controller/job/job_controller.go``) makes one pod, and another after each
failed pod until ``backoffLimit`` failures (restartPolicy Never); the "kubelet"
runs the pod's first container as a local process: ``command`` (else the image's
entrypoint, which here is none) then ``args``, with the container's ``env`` on top
of the image's environment (`Cluster.image_env`: PATH, HOME, PYTHONPATH).
Pod phases follow the process: Pending until it starts, Running, then Succeeded
(exit 0) or Failed; the container's terminated state has the exit code (128 plus
the signal number for a signal, as the container runtime reports it) and reason
``Completed`` or ``Error``.

Deleting a Job with propagationPolicy Foreground or Background deletes its pods
(SIGTERM to the process group, SIGKILL after the grace period); batch/v1's
default, Orphan, leaves them running (``DefaultGarbageCollectionPolicy`` in
``pkg/registry/batch/job/strategy.go``). `Cluster.close` ends every process.

Not emulated: restarts in place (restartPolicy OnFailure), parallelism and
completions above 1, activeDeadlineSeconds, ttlSecondsAfterFinished, suspend,
``$(VAR)`` expansion, ``valueFrom`` env entries, image pulls (every image is
"present on the machine"), nodes and scheduling beyond one "Scheduled" event.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

NODE = "lume-double-node"
# Pod name suffixes: apimachinery's utilrand alphabet (no vowels, no 0/1/3).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    """A timestamp as the API server writes it (RFC 3339, seconds, UTC)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Pod:
    """One pod of a Job and the process running its container."""

    def __init__(self, cluster: "Cluster", job: Dict[str, Any], name: str) -> None:
        self.cluster = cluster
        self.job_name = job["metadata"]["name"]
        template = copy.deepcopy(job["spec"]["template"])
        labels = dict(template.get("metadata", {}).get("labels") or {})
        self.object: Dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "generateName": f"{self.job_name}-",
                "namespace": job["metadata"]["namespace"],
                "uid": str(uuid.uuid4()),
                "resourceVersion": cluster.next_version(),
                "creationTimestamp": now(),
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": self.job_name,
                    "uid": job["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
                }],
            },
            "spec": {**template["spec"], "nodeName": NODE},
            "status": {"phase": "Pending", "qosClass": "Burstable"},
        }
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.log_path = cluster.workdir / f"{name}.log"
        self.thread = threading.Thread(target=self._run, name=f"k8s-pod-{name}", daemon=True)
        self.deleted = threading.Event()

    @property
    def name(self) -> str:
        return self.object["metadata"]["name"]

    @property
    def container(self) -> Dict[str, Any]:
        return self.object["spec"]["containers"][0]

    @property
    def phase(self) -> str:
        return self.object["status"]["phase"]

    def environment(self) -> Dict[str, str]:
        """The process's environment: the image's, then the container's ``env``."""
        env = dict(self.cluster.image_env)
        env["HOME"] = str(self.cluster.workdir / f"{self.name}-home")
        env["HOSTNAME"] = self.name
        for entry in self.container.get("env") or []:
            if "value" in entry or "valueFrom" not in entry:
                env[entry["name"]] = entry.get("value") or ""
        return env

    def _status(self, **container_state: Any) -> None:
        container = self.container
        self.object["status"]["containerStatuses"] = [{
            "name": container["name"], "image": container["image"],
            "imageID": f"docker-pullable://{container['image']}", "ready": "running" in container_state,
            "restartCount": 0, "started": "running" in container_state,
            "state": container_state,
        }]
        self.object["metadata"]["resourceVersion"] = self.cluster.next_version()

    def _run(self) -> None:
        cluster = self.cluster
        cluster.event(self, "Scheduled", f"Successfully assigned {cluster.namespace_of(self)}/{self.name} to {NODE}",
                      source="default-scheduler")
        # The "image pull": pull_seconds, and as long as a test holds pulls back.
        deadline = time.monotonic() + cluster.pull_seconds
        while not self.deleted.is_set() and (time.monotonic() < deadline or not cluster.pulls_open.is_set()):
            self.deleted.wait(0.02)
        container = self.container
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        env = self.environment()
        Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
        with cluster.lock:
            if self.deleted.is_set():
                return
            cluster.event(self, "Pulled", f'Container image "{container["image"]}" already present on machine')
            executable = shutil.which(argv[0], path=env.get("PATH")) if argv else None
            if executable is None:
                message = f'exec: "{argv[0] if argv else ""}": executable file not found in $PATH'
                self._finish(128, "StartError", message)
            else:
                with open(self.log_path, "ab") as log:
                    self.process = subprocess.Popen(
                        [executable, *argv[1:]], env=env, cwd=env["HOME"], stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, start_new_session=True,  # its own group: killed as one
                    )
                started = now()
                cluster.event(self, "Created", f"Created container {container['name']}")
                cluster.event(self, "Started", f"Started container {container['name']}")
                self.object["status"].update(phase="Running", startTime=started, podIP="127.0.0.1",
                                             hostIP="127.0.0.1")
                self._status(running={"startedAt": started})
        if self.process is None:
            cluster.pod_finished(self)
            return
        code = self.process.wait()
        with cluster.lock:
            # A signal shows as 128 + its number, as the container runtime reports it.
            exit_code = 128 - code if code < 0 else code
            self._finish(exit_code, "Completed" if exit_code == 0 else "Error", None, started)
        cluster.pod_finished(self)

    def _finish(self, exit_code: int, reason: str, message: Optional[str], started: Optional[str] = None) -> None:
        terminated: Dict[str, Any] = {"exitCode": exit_code, "reason": reason, "finishedAt": now(),
                                      "startedAt": started or now()}
        if message:
            terminated["message"] = message
        self.object["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        self._status(terminated=terminated)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def terminate(self, grace_seconds: float) -> None:
        """What the kubelet does to a deleted pod: SIGTERM, then SIGKILL after the grace period."""
        with self.cluster.lock:  # the process starts under this lock, or never once deleted
            self.deleted.set()
            process = self.process
        if process is None:
            return
        self.signal(signal.SIGTERM)
        try:
            process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        self.signal(signal.SIGKILL)  # anything left in the group
        process.wait()


class Cluster:
    """Jobs, pods and events of one emulated cluster.

    Args:
        workdir: Where pod homes and logs go.
        image_env: The environment every container starts with (the "image").
        pull_seconds: How long a pod stays Pending before its process starts.
        on_change: Called (without the lock) when a pod finishes.

    Attributes:
        pulls_open: Cleared, pods stay Pending until it is set again.
    """

    def __init__(self, workdir: Path, image_env: Mapping[str, str], pull_seconds: float = 0.0,
                 on_change: Optional[Callable[[], None]] = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.image_env = dict(image_env)
        self.pull_seconds = pull_seconds
        self.lock = threading.RLock()
        self.jobs: Dict[str, Dict[str, Any]] = {}  # "namespace/name" -> Job
        self.pods: Dict[str, Pod] = {}  # "namespace/name" -> Pod
        self.orphans: List[Pod] = []
        self.events: List[Dict[str, Any]] = []
        self._version = 1000
        self._random = random.Random()
        self._on_change = on_change
        self._closed = False
        self.pulls_open = threading.Event()
        self.pulls_open.set()

    def next_version(self) -> str:
        self._version += 1
        return str(self._version)

    @staticmethod
    def namespace_of(pod: Pod) -> str:
        return pod.object["metadata"]["namespace"]

    def event(self, pod: Pod, reason: str, message: str, source: str = "kubelet") -> None:
        stamp = now()
        with self.lock:
            self.events.append({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{pod.name}.{uuid.uuid4().hex[:16]}", "namespace": self.namespace_of(pod),
                             "uid": str(uuid.uuid4()), "resourceVersion": self.next_version(), "creationTimestamp": stamp},
                "involvedObject": {"kind": "Pod", "namespace": self.namespace_of(pod), "name": pod.name,
                                   "uid": pod.object["metadata"]["uid"], "apiVersion": "v1"},
                "reason": reason, "message": message, "type": "Normal", "count": 1,
                "source": {"component": source, **({"host": NODE} if source == "kubelet" else {})},
                "firstTimestamp": stamp, "lastTimestamp": stamp, "reportingComponent": source,
            })

    # --- Jobs -------------------------------------------------------------------

    def create_job(self, namespace: str, job: Dict[str, Any]) -> Dict[str, Any]:
        """Store an accepted Job (see `validation.check_job`) and start its first pod.

        Raises:
            KeyError: A Job of that name exists (409 AlreadyExists).
        """
        with self.lock:
            if self._closed:
                raise RuntimeError("the cluster is closed")
            name = job["metadata"]["name"]
            key = f"{namespace}/{name}"
            if key in self.jobs:
                raise KeyError(key)
            uid = str(uuid.uuid4())
            meta = job["metadata"]
            meta.update(namespace=namespace, uid=uid, resourceVersion=self.next_version(),
                        creationTimestamp=now(), generation=1)
            spec = job["spec"]
            controller_labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                                 "controller-uid": uid, "job-name": name}
            spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
            spec.setdefault("manualSelector", False)
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            template = spec["template"]
            template.setdefault("metadata", {}).setdefault("labels", {}).update(controller_labels)
            pod_spec = template["spec"]
            pod_spec.setdefault("terminationGracePeriodSeconds", 30)
            pod_spec.setdefault("dnsPolicy", "ClusterFirst")
            pod_spec.setdefault("schedulerName", "default-scheduler")
            pod_spec.setdefault("securityContext", {})
            for container in pod_spec["containers"]:
                image = container["image"]
                latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
                container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
            job["status"] = {}
            self.jobs[key] = job
            self._start_pod(job)
            return copy.deepcopy(job)

    def _start_pod(self, job: Dict[str, Any]) -> None:
        name = f"{job['metadata']['name']}-{''.join(self._random.choice(_SUFFIX_ALPHABET) for _ in range(5))}"
        pod = Pod(self, job, name)
        self.pods[f"{job['metadata']['namespace']}/{name}"] = pod
        status = job["status"]
        status.setdefault("startTime", now())
        status["active"] = status.get("active", 0) + 1
        status.setdefault("ready", 0)
        status.setdefault("uncountedTerminatedPods", {})
        job["metadata"]["resourceVersion"] = self.next_version()
        pod.thread.start()

    def job_pods(self, job: Dict[str, Any]) -> List[Pod]:
        uid = job["metadata"]["uid"]
        return [pod for pod in self.pods.values()
                if pod.object["metadata"]["ownerReferences"][0]["uid"] == uid]

    def pod_finished(self, pod: Pod) -> None:
        """The job controller's turn after a pod ended: count it, retry or finish the Job."""
        with self.lock:
            job = self.jobs.get(f"{self.namespace_of(pod)}/{pod.job_name}")
            if job is None or pod.deleted.is_set():
                return
            status = job["status"]
            active = status.get("active", 1) - 1
            if active > 0:
                status["active"] = active
            else:
                status.pop("active", None)  # the API server omits a zero count
            stamp = now()
            if pod.phase == "Succeeded":
                status["succeeded"] = status.get("succeeded", 0) + 1
                status["completionTime"] = stamp
                status["conditions"] = [{"type": "Complete", "status": "True", "lastProbeTime": stamp,
                                         "lastTransitionTime": stamp}]
            else:
                status["failed"] = status.get("failed", 0) + 1
                if status["failed"] > job["spec"]["backoffLimit"]:
                    status["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                             "message": "Job has reached the specified backoff limit",
                                             "lastProbeTime": stamp, "lastTransitionTime": stamp}]
                elif not self._closed:
                    self._start_pod(job)
            job["metadata"]["resourceVersion"] = self.next_version()
        if self._on_change is not None:
            self._on_change()

    def delete_job(self, namespace: str, name: str, policy: Optional[str],
                   grace_seconds: Optional[float]) -> Dict[str, Any]:
        """Delete a Job; Foreground and Background delete its pods, Orphan keeps them.

        Returns:
            The Job as it was.

        Raises:
            KeyError: No such Job (404).
        """
        with self.lock:
            job = self.jobs.pop(f"{namespace}/{name}")
            pods = self.job_pods(job)
            for pod in pods:
                del self.pods[f"{namespace}/{pod.name}"]
            if policy not in ("Foreground", "Background"):
                self.orphans.extend(pods)
                for pod in pods:
                    pod.object["metadata"].pop("ownerReferences", None)  # as the garbage collector does
                pods = []
        for pod in pods:
            grace = pod.object["spec"].get("terminationGracePeriodSeconds", 30) if grace_seconds is None else grace_seconds
            pod.terminate(float(grace))
        if policy == "Foreground":
            job["metadata"]["deletionTimestamp"] = now()
            job["metadata"]["finalizers"] = ["foregroundDeletion"]
        return job

    # --- for tests ----------------------------------------------------------------

    def all_pods(self) -> List[Pod]:
        with self.lock:
            return list(self.pods.values()) + list(self.orphans)

    def threads(self) -> List[threading.Thread]:
        return [pod.thread for pod in self.all_pods() if pod.thread.is_alive()]

    def reap(self) -> None:
        """Delete every Job with its pods, at once (grace period 0), and end orphans."""
        with self.lock:
            keys = list(self.jobs)
            orphans, self.orphans = self.orphans, []
        for key in keys:
            namespace, name = key.split("/", 1)
            try:
                self.delete_job(namespace, name, "Background", 0.0)
            except KeyError:
                pass  # the agent deleted it meanwhile
        for pod in orphans:
            pod.terminate(0.0)
        for pod in self.all_pods() + orphans:
            if pod.thread.is_alive():
                pod.thread.join(30)

    def close(self) -> None:
        """End every process and forget every object."""
        with self.lock:
            self._closed = True
        for pod in self.all_pods():
            pod.terminate(0.0)
            pod.thread.join(30)
        with self.lock:
            self.jobs.clear()
            self.pods.clear()
            self.orphans.clear()
            self.events.clear()
