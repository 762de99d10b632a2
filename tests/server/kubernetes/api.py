"""`KubernetesApi`: the HTTP front of the Kubernetes API double.

Serves the REST paths that prefect's KubernetesAgent (prefect 1.4.1,
``prefect/agent/kubernetes/agent.py``) and the kubernetes python client use:

- ``POST /apis/batch/v1/namespaces/{ns}/jobs`` (``create_namespaced_job``): the
  Job is checked (``validation.check_job``) and stored, 201; a refused Job gets the
  API server's ``Status`` (400 or 422), an existing name 409 AlreadyExists.
- ``GET .../jobs`` (``list_namespaced_job``, with ``labelSelector``,
  ``fieldSelector``, ``limit`` and ``continue``), ``GET .../jobs/{name}``,
  ``DELETE .../jobs/{name}`` (a ``DeleteOptions`` body or query:
  ``propagationPolicy``, ``gracePeriodSeconds``).
- ``GET /api/v1/namespaces/{ns}/pods`` (``list_namespaced_pod``), ``.../pods/{name}``,
  ``.../pods/{name}/log`` (the process's output, text), and
  ``GET /api/v1/namespaces/{ns}/events`` (``list_namespaced_event``, with
  ``fieldSelector=involvedObject.name=...``).

Requests need ``Authorization: Bearer <token>`` (401 otherwise), as with a
kubeconfig user token. Every answer closes its connection (HTTP/1.0), so no
handler thread outlives its request.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qs, urlparse

from .cluster import Cluster
from .validation import Refusal, check_job

_JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?$")
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)(/log)?)?$")
_EVENTS = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")


class SelectorError(ValueError):
    """A label or field selector the API server cannot parse (400)."""


def _split_selector(text: str) -> List[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` match a label selector (``k``, ``!k``, ``k=v``, ``k==v``,
    ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, comma-separated: all must hold).

    Raises:
        SelectorError: The selector cannot be parsed.
    """
    for requirement in _split_selector(selector):
        found = re.fullmatch(r"([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)", requirement)
        if found:
            key, operator, values = found.groups()
            options = {v.strip() for v in values.split(",") if v.strip()}
            if (operator == "in") != (key in labels and labels[key] in options):
                return False
            continue
        found = re.fullmatch(r"([^\s!=,()]+)\s*(==|!=|=)\s*([^\s!=,()]*)", requirement)
        if found:
            key, operator, value = found.groups()
            if (operator == "!=") == (labels.get(key) == value):
                return False
            continue
        found = re.fullmatch(r"(!?)([^\s!=,()]+)", requirement)
        if not found:
            raise SelectorError(f"unable to parse requirement: {requirement!r}")
        if bool(found.group(1)) == (found.group(2) in labels):
            return False
    return True


def field_selector_matches(selector: str, obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` matches a field selector (``a.b=v``, ``a.b==v``, ``a.b!=v``).

    Raises:
        SelectorError: The selector cannot be parsed.
    """
    for requirement in _split_selector(selector):
        found = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)", requirement)
        if not found:
            raise SelectorError(f"invalid selector: {requirement!r}")
        path, operator, value = found.groups()
        current: Any = obj
        for part in path.split("."):
            current = current.get(part) if isinstance(current, Mapping) else None
        actual = "" if current is None else str(current)
        if (operator == "!=") == (actual == value):
            return False
    return True


def _status(code: int, reason: str, message: str, details: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


class KubernetesApi:
    """A Kubernetes API server for Jobs, on a free port of 127.0.0.1.

    Args:
        workdir: Its directory (the cluster's pod homes and logs, the kubeconfig).
        image_env: The environment every container starts with (see `Cluster`).
        token: The bearer token clients must send.
        pull_seconds: How long a pod stays Pending.

    Attributes:
        cluster: The `Cluster` (Jobs, pods, events).
        url: The server's address.
        requests: ``(method, path, query, JSON body or None)`` of every request, in order.
    """

    def __init__(self, workdir: Path, image_env: Mapping[str, str], token: str = "lume-double-token",
                 pull_seconds: float = 0.0) -> None:
        self.workdir = workdir
        self.cluster = Cluster(workdir / "cluster", image_env, pull_seconds)
        self.token = token
        self.requests: List[Tuple[str, str, Dict[str, List[str]], Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, body, headers = api.handle(self.command, self.path, self.headers.get("Authorization"), raw)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if isinstance(body, bytes) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"kubernetes-api-{self.port}", daemon=True)

    def start(self) -> "KubernetesApi":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end every process of the cluster."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(10)
        self._httpd.server_close()
        self.cluster.close()

    def threads(self) -> List[threading.Thread]:
        return [t for t in [self._thread, *self.cluster.threads()] if t.is_alive()]

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this server (a token user, the given namespace)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "lume-double",
            "clusters": [{"name": "lume-double", "cluster": {"server": self.url}}],
            "users": [{"name": "lume-tests", "user": {"token": self.token}}],
            "contexts": [{"name": "lume-double",
                          "context": {"cluster": "lume-double", "user": "lume-tests", "namespace": namespace}}],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    # --- requests -----------------------------------------------------------------

    def handle(self, method: str, target: str, authorization: Optional[str],
               raw: bytes) -> Tuple[int, Any, List[Tuple[str, str]]]:
        """Answer one request: ``(code, JSON body or bytes, extra headers)``."""
        url = urlparse(target)
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            body = json.loads(raw) if raw else None
        except ValueError as err:
            self.requests.append((method, url.path, query, None))
            return 400, _status(400, "BadRequest", f"the body is not JSON: {err}"), []
        self.requests.append((method, url.path, query, copy.deepcopy(body)))
        if authorization != f"Bearer {self.token}":
            return 401, _status(401, "Unauthorized", "Unauthorized"), []
        try:
            jobs, pods, events = _JOBS.match(url.path), _PODS.match(url.path), _EVENTS.match(url.path)
            if jobs:
                return self._jobs(method, jobs.group(1), jobs.group(2), query, body)
            if pods and method == "GET":
                return self._pods(pods.group(1), pods.group(2), bool(pods.group(3)), query)
            if events and method == "GET":
                return self._list(events.group(1), "EventList", list(self.cluster.events), query)
        except SelectorError as err:
            return 400, _status(400, "BadRequest", str(err)), []
        if jobs or pods or events:
            return 405, _status(405, "MethodNotAllowed", f"the server does not allow this method: {method}"), []
        return 404, _status(404, "NotFound", "the server could not find the requested resource"), []

    def _jobs(self, method: str, namespace: str, name: Optional[str], query: Dict[str, List[str]],
              body: Any) -> Tuple[int, Any, List[Tuple[str, str]]]:
        cluster = self.cluster
        if name is None and method == "POST":
            job_name = ((body or {}).get("metadata") or {}).get("name", "") if isinstance(body, dict) else ""
            try:
                job, warnings = check_job(body)
            except Refusal as refusal:
                return refusal.code, refusal.status(job_name), []
            if job.get("metadata", {}).get("namespace", namespace) != namespace:
                return 400, _status(400, "BadRequest", "the namespace of the provided object does not match "
                                    "the namespace sent on the request"), []
            try:
                created = cluster.create_job(namespace, job)
            except KeyError:
                return 409, _status(409, "AlreadyExists", f'jobs.batch "{job_name}" already exists',
                                    {"name": job_name, "group": "batch", "kind": "jobs"}), []
            return 201, created, [("Warning", f'299 - "{w}"') for w in warnings]
        if name is None and method == "GET":
            with cluster.lock:
                items = [copy.deepcopy(j) for k, j in cluster.jobs.items() if k.startswith(f"{namespace}/")]
            return self._list(namespace, "JobList", items, query)
        if name is not None and method in ("GET", "DELETE"):
            if method == "GET":
                with cluster.lock:
                    job = copy.deepcopy(cluster.jobs.get(f"{namespace}/{name}"))
            else:
                options = body if isinstance(body, dict) else {}
                policy = options.get("propagationPolicy") or (query.get("propagationPolicy") or [None])[0]
                grace = options.get("gracePeriodSeconds", (query.get("gracePeriodSeconds") or [None])[0])
                try:
                    job = cluster.delete_job(namespace, name, policy, None if grace is None else float(grace))
                except KeyError:
                    job = None
                if job is not None and policy != "Foreground":
                    return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                 "details": {"name": name, "group": "batch", "kind": "jobs",
                                             "uid": job["metadata"]["uid"]}}, []
            if job is None:
                return 404, _status(404, "NotFound", f'jobs.batch "{name}" not found',
                                    {"name": name, "group": "batch", "kind": "jobs"}), []
            return 200, job, []
        return 405, _status(405, "MethodNotAllowed", f"the server does not allow this method: {method}"), []

    def _pods(self, namespace: str, name: Optional[str], log: bool,
              query: Dict[str, List[str]]) -> Tuple[int, Any, List[Tuple[str, str]]]:
        with self.cluster.lock:
            pods = [p for p in self.cluster.all_pods() if p.object["metadata"]["namespace"] == namespace]
            if name is None:
                return self._list(namespace, "PodList", [copy.deepcopy(p.object) for p in pods], query)
            pod = next((p for p in pods if p.name == name), None)
            if pod is None:
                return 404, _status(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"}), []
            if not log:
                return 200, copy.deepcopy(pod.object), []
        try:
            return 200, pod.log_path.read_bytes(), []
        except OSError:
            return 400, _status(400, "BadRequest", f'container "{pod.container["name"]}" in pod "{name}" is '
                                "waiting to start: ContainerCreating"), []

    def _list(self, namespace: str, kind: str, items: List[Dict[str, Any]],
              query: Dict[str, List[str]]) -> Tuple[int, Any, List[Tuple[str, str]]]:
        labels = (query.get("labelSelector") or [""])[0]
        fields = (query.get("fieldSelector") or [""])[0]
        items = [i for i in items if i["metadata"].get("namespace") == namespace
                 and label_selector_matches(labels, i["metadata"].get("labels") or {})
                 and field_selector_matches(fields, i)]
        items.sort(key=lambda i: i["metadata"]["name"])  # etcd key order
        start = 0
        token = (query.get("continue") or [""])[0]
        if token:
            try:
                start = int(json.loads(base64.urlsafe_b64decode(token))["start"])
            except (ValueError, KeyError, TypeError):
                return 400, _status(400, "BadRequest", "continue key is not valid"), []
        limit = int((query.get("limit") or ["0"])[0] or 0)
        end = start + limit if limit > 0 else len(items)
        metadata: Dict[str, Any] = {"resourceVersion": self.cluster.next_version()}
        if end < len(items):
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps({"start": end}).encode()).decode()
            metadata["remainingItemCount"] = len(items) - end
        item_kind = kind[: -len("List")]
        api_version = "batch/v1" if item_kind == "Job" else "v1"
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", item_kind)
        return 200, {"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items[start:end]}, []
