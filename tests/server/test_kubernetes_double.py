"""The Kubernetes API double (``tests/server/kubernetes/``) and prefect's
KubernetesAgent on it.

- Through the kubernetes python client (a kubeconfig of the double): Jobs the
  batch/v1 schema or the API server's rules refuse are refused as the API server
  refuses them; a Job's pod phases follow its process; deleting a Job stops it
  (but for batch/v1's default, Orphan); lists take label selectors and pages.
- With prefect's real KubernetesAgent and KubernetesBackend: the agent deletes
  finished Jobs, reports a Pending pod's events in the flow run's logs, fails
  the run of a killed pod, which KubernetesBackend reports as crashed, and fails
  a run whose Job the API server refuses with the server's answer.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from lume_scheduling.adapters.server import KubernetesBackend
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import FlowRunState

CONFTEST = sys.modules[next(name for name in sys.modules if name.endswith("server.conftest"))]
EMULATOR = CONFTEST.emulator_module
PROJECT = CONFTEST.PROJECT
DOUBLE = EMULATOR.load_kubernetes_double()
NAMESPACE = "lume"


def _wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout} s")


@pytest.fixture(scope="module")
def double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    api = DOUBLE.KubernetesApi(tmp_path_factory.mktemp("kubernetes-double"), {"PATH": "/usr/bin:/bin"}).start()
    yield api
    api.stop()


@pytest.fixture
def batch(double: Any, tmp_path: Path) -> Iterator[Any]:
    """A BatchV1Api client of the double, from a kubeconfig (never ``~/.kube``)."""
    kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE)
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield kubernetes.client.BatchV1Api(client)
    double.cluster.pulls_open.set()
    double.cluster.reap()  # no process outlives its test
    client.close()


@pytest.fixture
def core(batch: Any) -> Any:
    return kubernetes.client.CoreV1Api(batch.api_client)


def job(command: List[str], name: str = "flow-job", backoff_limit: int = 0, **container: Any) -> Dict[str, Any]:
    """A batch/v1 Job running ``command`` in a container named ``flow``."""
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "lume", "prefect.io/identifier": name}},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": {"prefect.io/identifier": name}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "flow", "image": "lume:1", "command": command, **container}]},
            },
        },
    }


def python(code: str) -> List[str]:
    return [sys.executable, "-c", code]


def refusal(batch: Any, body: Dict[str, Any]) -> Dict[str, Any]:
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job(NAMESPACE, body)
    status = json.loads(caught.value.body)
    assert status["status"] == "Failure" and status["code"] == caught.value.status
    return status


def pod_of(core: Any, name: str) -> Any:
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"prefect.io/identifier={name}").items
    assert len(pods) <= 1, [p.metadata.name for p in pods]
    return pods[0] if pods else None


def phase(core: Any, name: str) -> Optional[str]:
    pod = pod_of(core, name)
    return pod.status.phase if pod else None


class TestRefusedJobs:
    def test_a_job_the_schema_refuses_is_refused_with_422(self, batch: Any) -> None:
        body = job(["true"])
        del body["spec"]["template"]["spec"]["containers"][0]["name"]  # required by the batch/v1 schema
        status = refusal(batch, body)
        assert (status["code"], status["reason"]) == (422, "Invalid")
        assert status["details"]["causes"][0]["field"] == "spec.template.spec.containers[0]"
        assert "'name' is a required property" in status["message"]
        assert batch.list_namespaced_job(NAMESPACE).items == []

    def test_a_value_of_the_wrong_type_is_a_bad_request(self, batch: Any) -> None:
        body = job(["true"])
        body["spec"]["backoffLimit"] = "six"
        status = refusal(batch, body)
        assert (status["code"], status["reason"]) == (400, "BadRequest")
        assert status["details"]["causes"][0]["field"] == "spec.backoffLimit"

    @pytest.mark.parametrize("name", ["MY VAR", "1ST", "..A"])
    def test_an_env_name_kubernetes_refuses_is_invalid(self, batch: Any, name: str) -> None:
        status = refusal(batch, job(["true"], env=[{"name": "OK", "value": "1"}, {"name": name, "value": "x"}]))
        assert status["code"] == 422
        assert status["details"]["causes"][0]["field"] == "spec.template.spec.containers[0].env[1].name"

    def test_a_service_account_that_is_not_a_dns_subdomain_is_invalid(self, batch: Any) -> None:
        body = job(["true"])
        body["spec"]["template"]["spec"]["serviceAccountName"] = "Prefect_Runner"
        status = refusal(batch, body)
        assert status["details"]["causes"][0]["field"] == "spec.template.spec.serviceAccountName"

    @pytest.mark.parametrize(
        "change, field",
        [
            (lambda b: b["spec"]["template"]["spec"].update(restartPolicy="Always"), "spec.template.spec.restartPolicy"),
            (lambda b: b["metadata"].update(name="x" * 64), "metadata.name"),
            (lambda b: b["spec"]["template"]["spec"]["containers"][0].pop("image"), "spec.template.spec.containers[0].image"),
            (lambda b: b["spec"]["template"]["spec"]["containers"][0].update(name="Flow"), "spec.template.spec.containers[0].name"),
        ],
    )
    def test_the_api_servers_own_rules(self, batch: Any, change: Callable[[Dict[str, Any]], Any], field: str) -> None:
        body = job(["true"])
        change(body)
        assert refusal(batch, body)["details"]["causes"][0]["field"] == field

    def test_an_unknown_field_is_dropped_with_a_warning(self, batch: Any, double: Any) -> None:
        body = job(["true"])
        body["spec"]["template"]["spec"]["containers"][0]["colour"] = "blue"
        code, created, headers = double.handle("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs",
                                               f"Bearer {double.token}", json.dumps(body).encode())
        assert code == 201
        assert "colour" not in created["spec"]["template"]["spec"]["containers"][0]
        assert headers == [("Warning", '299 - "unknown field "spec.template.spec.containers[0].colour""')]

    def test_a_second_job_of_the_same_name_conflicts(self, batch: Any) -> None:
        batch.create_namespaced_job(NAMESPACE, job(python("import time; time.sleep(30)")))
        with pytest.raises(ApiException) as caught:
            batch.create_namespaced_job(NAMESPACE, job(["true"]))
        assert caught.value.status == 409

    def test_requests_without_the_kubeconfigs_token_are_unauthorized(self, double: Any) -> None:
        code, status, _ = double.handle("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", None, b"")
        assert (code, status["reason"]) == (401, "Unauthorized")


class TestPodPhases:
    def test_phases_follow_the_process(self, batch: Any, core: Any, double: Any, tmp_path: Path) -> None:
        gate = tmp_path / "go"
        double.cluster.pulls_open.clear()  # the "image pull" waits
        batch.create_namespaced_job(NAMESPACE, job(python(
            f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)")))
        assert phase(core, "flow-job") == "Pending"
        assert pod_of(core, "flow-job").status.container_statuses is None
        double.cluster.pulls_open.set()
        _wait_for(lambda: phase(core, "flow-job") == "Running", what="Running")
        pod = pod_of(core, "flow-job")
        assert pod.status.container_statuses[0].state.running is not None
        assert batch.read_namespaced_job("flow-job", NAMESPACE).status.active == 1
        gate.touch()
        _wait_for(lambda: phase(core, "flow-job") == "Succeeded", what="Succeeded")
        terminated = pod_of(core, "flow-job").status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (0, "Completed")
        status = batch.read_namespaced_job("flow-job", NAMESPACE).status
        assert (status.succeeded, status.active, status.conditions[0].type) == (1, None, "Complete")

    def test_a_failing_process_fails_its_pod_and_the_job(self, batch: Any, core: Any) -> None:
        batch.create_namespaced_job(NAMESPACE, job(python("raise SystemExit(3)")))
        _wait_for(lambda: phase(core, "flow-job") == "Failed", what="Failed")
        terminated = pod_of(core, "flow-job").status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (3, "Error")
        status = _wait_for(lambda: (s := batch.read_namespaced_job("flow-job", NAMESPACE).status).failed and s)
        assert (status.failed, status.conditions[0].reason) == (1, "BackoffLimitExceeded")

    def test_a_failed_pod_is_replaced_up_to_the_backoff_limit(self, batch: Any, core: Any) -> None:
        batch.create_namespaced_job(NAMESPACE, job(python("raise SystemExit(1)"), backoff_limit=1))
        _wait_for(lambda: (batch.read_namespaced_job("flow-job", NAMESPACE).status.failed or 0) == 2, what="2 failures")
        pods = core.list_namespaced_pod(NAMESPACE, label_selector="prefect.io/identifier=flow-job").items
        assert [p.status.phase for p in pods] == ["Failed", "Failed"]

    def test_the_container_gets_its_env_and_args(self, batch: Any, core: Any) -> None:
        batch.create_namespaced_job(NAMESPACE, job(
            [sys.executable], args=["-c", "import os, sys; print(os.environ['RUN_ID'], sys.argv[1:])", "extra"],
            env=[{"name": "RUN_ID", "value": "run-7"}]))
        _wait_for(lambda: phase(core, "flow-job") == "Succeeded", what="Succeeded")
        name = pod_of(core, "flow-job").metadata.name
        assert core.read_namespaced_pod_log(name, NAMESPACE) == "run-7 ['extra']\n"

    def test_a_missing_executable_fails_the_pod_as_the_runtime_does(self, batch: Any, core: Any) -> None:
        batch.create_namespaced_job(NAMESPACE, job(["no-such-program"]))
        _wait_for(lambda: phase(core, "flow-job") == "Failed", what="Failed")
        terminated = pod_of(core, "flow-job").status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (128, "StartError")
        assert _wait_for(lambda: batch.read_namespaced_job("flow-job", NAMESPACE).status.failed) == 1

    def test_a_pending_pod_has_its_scheduling_event(self, batch: Any, core: Any, double: Any) -> None:
        double.cluster.pulls_open.clear()
        batch.create_namespaced_job(NAMESPACE, job(["true"]))
        name = pod_of(core, "flow-job").metadata.name
        events = _wait_for(lambda: core.list_namespaced_event(
            NAMESPACE, field_selector=f"involvedObject.name={name}").items, what="an event")
        assert phase(core, "flow-job") == "Pending"
        assert [e.reason for e in events] == ["Scheduled"]
        assert events[0].last_timestamp is not None


class TestDelete:
    @pytest.mark.parametrize("policy", ["Foreground", "Background"])
    def test_deleting_the_job_stops_its_process(self, batch: Any, core: Any, double: Any, policy: str) -> None:
        batch.create_namespaced_job(NAMESPACE, job(python("import time; time.sleep(60)")))
        _wait_for(lambda: phase(core, "flow-job") == "Running", what="Running")
        (pod,) = double.cluster.all_pods()
        batch.delete_namespaced_job("flow-job", NAMESPACE, body=kubernetes.client.V1DeleteOptions(propagation_policy=policy))
        assert pod.process.poll() is not None  # SIGTERM ended it within the grace period
        assert pod_of(core, "flow-job") is None
        with pytest.raises(ApiException) as caught:
            batch.read_namespaced_job("flow-job", NAMESPACE)
        assert caught.value.status == 404

    def test_batch_v1s_default_policy_orphans_the_pods(self, batch: Any, core: Any, double: Any) -> None:
        batch.create_namespaced_job(NAMESPACE, job(python("import time; time.sleep(60)")))
        _wait_for(lambda: phase(core, "flow-job") == "Running", what="Running")
        batch.delete_namespaced_job("flow-job", NAMESPACE)
        (pod,) = double.cluster.all_pods()
        assert pod.running() and pod_of(core, "flow-job").metadata.owner_references is None
        double.cluster.reap()
        assert not pod.running()

    def test_deleting_an_unknown_job_is_not_found(self, batch: Any) -> None:
        with pytest.raises(ApiException) as caught:
            batch.delete_namespaced_job("nothing", NAMESPACE)
        assert caught.value.status == 404


class TestLists:
    def test_label_selectors_and_pages(self, batch: Any) -> None:
        for index in range(3):
            body = job(["true"], name=f"job-{index}")
            body["metadata"]["labels"]["rank"] = str(index)
            batch.create_namespaced_job(NAMESPACE, body)
        names = lambda jobs: [j.metadata.name for j in jobs.items]  # noqa: E731
        assert names(batch.list_namespaced_job(NAMESPACE, label_selector="rank in (0,2)")) == ["job-0", "job-2"]
        assert names(batch.list_namespaced_job(NAMESPACE, label_selector="app=lume,rank!=1")) == ["job-0", "job-2"]
        assert names(batch.list_namespaced_job(NAMESPACE, label_selector="!rank")) == []
        first = batch.list_namespaced_job(NAMESPACE, label_selector="prefect.io/identifier", limit=2)
        assert names(first) == ["job-0", "job-1"] and first.metadata._continue
        rest = batch.list_namespaced_job(NAMESPACE, label_selector="prefect.io/identifier", limit=2,
                                         _continue=first.metadata._continue)
        assert names(rest) == ["job-2"] and rest.metadata._continue is None
        assert batch.list_namespaced_job("other-namespace").items == []

    @pytest.mark.parametrize(
        "selector, expected",
        [("a", True), ("!a", False), ("a=1", True), ("a==2", False), ("a!=2", True), ("b!=1", True),
         ("a in (1, 2)", True), ("a notin (1)", False), ("a=1,b", False), ("", True)],
    )
    def test_label_selector_grammar(self, selector: str, expected: bool) -> None:
        assert DOUBLE.label_selector_matches(selector, {"a": "1"}) is expected


@pytest.mark.real_agent
class TestPrefectsKubernetesAgent:
    @pytest.fixture
    def agent_kind(self) -> Any:
        return EMULATOR.KubernetesAgentKind()

    @pytest.fixture
    def kubernetes_backend(self, emulator: Any) -> Iterator[KubernetesBackend]:
        with KubernetesBackend(emulator.config()) as backend:
            backend.create_project(PROJECT)
            yield backend

    def test_the_agent_deletes_a_finished_job(self, emulator: Any, kubernetes_backend: KubernetesBackend) -> None:
        flow_id = kubernetes_backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
        flow_run_id = kubernetes_backend.submit({}, flow_id=flow_id, env={"LUME_RUN": "k8s"})
        assert kubernetes_backend.wait(flow_run_id, timeout=60) is FlowRunState.SUCCESS
        api = emulator.agent.api
        # The Job as the agent created it (by now the agent may have deleted it).
        ((where, job),) = [(where, body) for method, where, _, body in api.requests
                           if method == "POST" and where.endswith("/jobs")
                           and body["metadata"]["labels"]["prefect.io/flow_run_id"] == flow_run_id]
        job_key = f"{where.split('/')[-2]}/{job['metadata']['name']}"
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = {entry["name"]: entry["value"] for entry in container["env"]}
        assert (env["LUME_RUN"], env["PREFECT__CONTEXT__FLOW_RUN_ID"]) == ("k8s", flow_run_id)
        # the agent's heartbeat (manage_jobs) lists its Jobs and deletes the finished one
        _wait_for(lambda: job_key not in api.cluster.jobs, what="the agent deleting the Job")
        path = f"/apis/batch/v1/namespaces/default/jobs/{job_key.split('/')[1]}"
        deletes = [body for method, where, _, body in api.requests if (method, where) == ("DELETE", path)]
        assert [body.get("propagationPolicy") for body in deletes] == ["Foreground"]
        assert any(where.endswith("/jobs") and query.get("labelSelector") == ["prefect.io/identifier"]
                   for method, where, query, _ in api.requests if method == "GET")

    def test_a_killed_pod_is_failed_by_the_agent_and_reported_crashed(
        self, emulator: Any, kubernetes_backend: KubernetesBackend
    ) -> None:
        flow_id = kubernetes_backend.register_flow(flows.hanging_flow, PROJECT, no_url=True)
        flow_run_id = kubernetes_backend.submit({"seconds": 60.0}, flow_id=flow_id)
        _wait_for(lambda: emulator.agent.running(flow_run_id), what="the pod running")
        emulator.agent.kill_flow_run(flow_run_id)
        # the agent's manage_jobs sees the failed pod and fails the run ("Kubernetes Error")
        assert kubernetes_backend.wait(flow_run_id, timeout=60) is FlowRunState.CRASHED
        run = emulator.store.get("flow_run", flow_run_id)
        assert run["state_message"].startswith("Kubernetes Error: pods ['prefect-job-")
        messages = [row["message"] for row in emulator.store.where("log", flow_run_id=flow_run_id)]
        assert any("Exit Code:: 137" in message for message in messages), messages

    def test_a_pending_pods_events_reach_the_flow_run_logs(self, make_emulator: Callable[..., Any]) -> None:
        emulated = make_emulator(agent_kind=EMULATOR.KubernetesAgentKind(pull_seconds=3.0, heartbeat_period=0.5))
        emulated.agent.wait_registered(emulated.server)
        with KubernetesBackend(emulated.config()) as backend:
            backend.create_project(PROJECT)
            flow_run_id = backend.submit({}, flow_id=backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True))
            assert backend.wait(flow_run_id, timeout=60) is FlowRunState.SUCCESS
        rows = [row for row in emulated.store.where("log", flow_run_id=flow_run_id) if row["name"] == "k8s-infra"]
        assert rows and rows[0]["message"].startswith("Event: 'Scheduled' on pod 'prefect-job-"), rows

    def test_a_job_the_api_server_refuses_fails_the_run_with_its_reason(
        self, emulator: Any, kubernetes_backend: KubernetesBackend
    ) -> None:
        # The domain accepts any job template mapping; the API server refuses a
        # name with capitals, and prefect's agent fails the run with its answer.
        template = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "Lume_Job"},
                    "spec": {"template": {"spec": {"containers": [{"name": "flow"}]}}}}
        flow_id = kubernetes_backend.register_flow(flows.arithmetic_flow, PROJECT, no_url=True)
        flow_run_id = kubernetes_backend.submit({}, flow_id=flow_id, job_template=template)
        assert kubernetes_backend.wait(flow_run_id, timeout=60) is FlowRunState.FAILED
        assert emulator.agent.api.cluster.jobs == {}
        message = emulator.store.get("flow_run", flow_run_id)["state_message"]
        assert "Unprocessable Entity" in message and "metadata.name" in message
