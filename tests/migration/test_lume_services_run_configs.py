"""The run configs of `lume_scheduling.adapters.lume_services`: the domain's, with
lume-services' ``build()``, and lenient about other kinds' fields as lume-services'
were (its ``Flow`` passes ``image=`` to every backend)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pydantic
import pytest
from prefect.run_configs import DockerRun, KubernetesRun, LocalRun

from lume_scheduling import domain
from lume_scheduling.adapters.local import LocalBackend
from lume_scheduling.adapters.lume_services import DockerRunConfig, KubernetesRunConfig, LocalRunConfig
from lume_scheduling.adapters.testing import flows


class TestBuild:
    def test_local(self, tmp_path: Path) -> None:
        run = LocalRunConfig(labels=["a"], env={"K": "v"}, working_dir=str(tmp_path)).build()
        assert isinstance(run, LocalRun)
        assert (run.labels, run.env, run.working_dir) == ({"a"}, {"K": "v"}, str(tmp_path))

    def test_docker(self) -> None:
        run = DockerRunConfig(image="python:3.11", ports=[8080], env={"K": "v"}).build()
        assert isinstance(run, DockerRun)
        assert (run.image, run.ports, run.env) == ("python:3.11", [8080], {"K": "v"})

    def test_kubernetes_gets_the_packaged_job_template(self) -> None:
        run = KubernetesRunConfig(image="python:3.11", cpu_limit="500m", cpu_request="250m").build()
        assert isinstance(run, KubernetesRun)
        assert run.job_template["kind"] == "Job"
        assert (run.cpu_limit, run.cpu_request) == ("500m", "250m")


class TestOtherKindsFields:
    @pytest.mark.parametrize(
        "model, field, value",
        [
            (LocalRunConfig, "image", "python:3.11"),
            (LocalRunConfig, "host_config", {"mem_limit": "1g"}),
            (DockerRunConfig, "working_dir", "/nowhere"),
            (KubernetesRunConfig, "ports", [1]),
        ],
    )
    def test_are_ignored_with_a_warning_naming_them_and_the_callers_line(
        self, model: type, field: str, value: object
    ) -> None:
        fields = {"image": "python:3.11"} if model is DockerRunConfig else {}
        with pytest.warns(UserWarning, match=f"{model.__name__} ignores {field}") as record:
            config = model(**fields, **{field: value})
        assert field not in config.dict()
        assert [w.filename for w in record] == [__file__]

    def test_an_unknown_key_is_refused_without_a_warning(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(pydantic.ValidationError, match="no_such_key"):
                LocalRunConfig(image="python:3.11", no_such_key=1)

    def test_the_domain_models_stay_strict(self) -> None:
        with pytest.raises(pydantic.ValidationError, match="image"):
            domain.LocalRunConfig(image="python:3.11")

    def test_their_own_rules_still_hold(self) -> None:
        with pytest.raises(pydantic.ValidationError, match="working_dir"):
            LocalRunConfig(working_dir="/no/such/directory")
        with pytest.raises(pydantic.ValidationError, match="cpu_request"):
            KubernetesRunConfig(cpu_limit=1, cpu_request=2)


class TestUsedByTheBackends:
    def test_pickles_and_is_accepted_by_the_local_backend(self, tmp_path: Path) -> None:
        config = LocalRunConfig(env={"LUME_SCHEDULING_EXAMPLE": "compat"}, working_dir=str(tmp_path))
        assert pickle.loads(pickle.dumps(config)) == config
        with LocalBackend(max_workers=1) as backend:
            values = backend.run_and_return({}, config, flow=flows.environment_flow)
        assert values == {"read_env-1": "compat", "working_dir-1": str(tmp_path), "name": "LUME_SCHEDULING_EXAMPLE"}
