"""The rules of the run configs, one use case per class (issue 2)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List

import docker
import pytest
from docker.constants import DEFAULT_DOCKER_API_VERSION
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from lume_scheduling.adapters.testing import strategies as rs
from lume_scheduling.domain import (
    DaskRunConfig,
    DockerRunConfig,
    KubernetesRunConfig,
    LocalRunConfig,
    RunConfig,
    parse_run_config,
)

ALL_MODELS = [RunConfig, LocalRunConfig, DockerRunConfig, KubernetesRunConfig, DaskRunConfig]
REQUIRED: Dict[type, Dict[str, Any]] = {DockerRunConfig: {"image": "ubuntu"}}


def build(model: type, **kwargs: Any) -> Any:
    """Build ``model`` with its required fields filled in."""
    return model(**{**REQUIRED.get(model, {}), **kwargs})


def error_locations(error: ValidationError) -> List[str]:
    return [str(item["loc"][0]) for item in error.errors()]


def rejects(model: type, field: str, **kwargs: Any) -> ValidationError:
    """Assert that building ``model`` raises a ValidationError located at ``field``."""
    with pytest.raises(ValidationError) as caught:
        build(model, **kwargs)
    assert field in error_locations(caught.value), caught.value.errors()
    return caught.value


MODELS = st.sampled_from(ALL_MODELS)


class TestLabelsOfEveryKind:
    @given(model=MODELS, labels=st.lists(rs.label_texts(), min_size=1, max_size=6))
    def test_duplicates_collapse_keeping_first_order(self, model: type, labels: List[str]) -> None:
        expected = list(dict.fromkeys(labels))
        assert build(model, labels=labels + labels[::-1]).labels == expected


@pytest.mark.parametrize("model", ALL_MODELS)
class TestLabels:
    def test_default_is_lume_services(self, model: type) -> None:
        assert build(model).labels == ["lume-services"]

    def test_default_is_not_shared_between_configs(self, model: type) -> None:
        first = build(model)
        first.labels.append("gpu")
        assert build(model).labels == ["lume-services"]

    @pytest.mark.parametrize("bad", ["", "   ", " gpu", "gpu ", "\tgpu", "gpu\n"])
    def test_blank_or_padded_label_rejected(self, model: type, bad: str) -> None:
        rejects(model, "labels", labels=["ok", bad])

    @pytest.mark.parametrize("bad", ["gpu", 5, [1], [None], [b"gpu"], {"gpu": 1}])
    def test_labels_must_be_a_list_of_strings(self, model: type, bad: Any) -> None:
        rejects(model, "labels", labels=bad)

    def test_inner_blanks_kept(self, model: type) -> None:
        assert build(model, labels=["two words"]).labels == ["two words"]


class TestEnvOfEveryKind:
    @given(model=MODELS, data=st.data())
    def test_valid_env_kept(self, model: type, data: st.DataObject) -> None:
        # Kubernetes also limits the names (see test_kubernetes_names).
        env = data.draw(rs.kubernetes_envs() if model is KubernetesRunConfig else rs.envs(), label="env")
        assert build(model, env=env).env == env

    @given(model=MODELS, number=st.integers() | st.floats(allow_nan=False, allow_infinity=False))
    def test_numbers_become_their_string(self, model: type, number: Any) -> None:
        assert build(model, env={"N": number}).env == {"N": str(number)}


@pytest.mark.parametrize("model", ALL_MODELS)
class TestEnv:
    @pytest.mark.parametrize("name", ["", "A=B", "=A", "A\x00", 1, None])
    def test_bad_names_rejected(self, model: type, name: Any) -> None:
        rejects(model, "env", env={name: "x"})

    @pytest.mark.parametrize("value", [True, False, None, "a\x00b", ["x"], b"x", {"x": 1}, float("nan")])
    def test_bad_values_rejected(self, model: type, value: Any) -> None:
        rejects(model, "env", env={"NAME": value})

    def test_int_is_not_turned_into_a_float_string(self, model: type) -> None:
        assert build(model, env={"WORKERS": 8, "RATE": 0.5}).env == {"WORKERS": "8", "RATE": "0.5"}

    @pytest.mark.parametrize("env", ["A=1", [("A", "1")], 5])
    def test_env_must_be_a_mapping(self, model: type, env: Any) -> None:
        rejects(model, "env", env=env)


class TestSecretsNeverShown:
    """repr and str mask env values; dict() and json() keep them."""

    SECRET = "s3cr3t-t0ken-value"

    @given(config=rs.run_configs(), value=st.text(min_size=8, max_size=20).filter(lambda v: "\x00" not in v))
    def test_repr_and_str_mask_every_env_value(self, config: RunConfig, value: str) -> None:
        marked = f"\u2603{value}\u2603"  # a snowman never appears in a generated config otherwise
        config = config.copy(update={"env": {"TOKEN": marked, "OTHER": marked}})
        for shown in (repr(config), str(config)):
            assert marked not in shown
            assert "TOKEN" in shown

    @pytest.mark.parametrize("model", ALL_MODELS)
    def test_dict_and_json_keep_the_real_values(self, model: type) -> None:
        config = build(model, env={"TOKEN": self.SECRET})
        assert self.SECRET not in repr(config) and self.SECRET not in str(config)
        assert config.dict()["env"] == {"TOKEN": self.SECRET}
        assert self.SECRET in config.json()

    def test_validation_errors_do_not_show_env_values(self) -> None:
        with pytest.raises(ValidationError) as caught:
            RunConfig(env={"TOKEN": self.SECRET + "\x00"})
        assert self.SECRET not in str(caught.value)

    def test_assigned_env_masked_too(self) -> None:
        config = RunConfig()
        config.env = {"TOKEN": self.SECRET}
        assert self.SECRET not in repr(config)
        assert config.env == {"TOKEN": self.SECRET}


class TestWorkingDir:
    def test_left_out_means_none_not_the_import_time_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        assert LocalRunConfig().working_dir is None
        assert LocalRunConfig(working_dir=None).working_dir is None

    def test_existing_directory_kept_absolute(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path)
        config = LocalRunConfig(working_dir="sub")
        assert config.working_dir == str(tmp_path / "sub")
        assert os.path.isabs(config.working_dir)

    def test_path_object_accepted(self, tmp_path: Path) -> None:
        assert LocalRunConfig(working_dir=tmp_path).working_dir == str(tmp_path)

    def test_missing_directory_is_a_validation_error_not_file_not_found(self, tmp_path: Path) -> None:
        error = rejects(LocalRunConfig, "working_dir", working_dir=str(tmp_path / "missing"))
        assert "missing" in str(error)

    @pytest.mark.parametrize("bad", ["", "a\x00b", 5, b"/tmp", ["/tmp"]])
    def test_non_paths_rejected(self, bad: Any) -> None:
        rejects(LocalRunConfig, "working_dir", working_dir=bad)

    def test_a_file_is_not_a_directory(self, tmp_path: Path) -> None:
        file = tmp_path / "file.txt"
        file.write_text("x")
        rejects(LocalRunConfig, "working_dir", working_dir=str(file))


class TestDockerImage:
    def test_image_is_required(self) -> None:
        with pytest.raises(ValidationError) as caught:
            DockerRunConfig()
        assert "image" in error_locations(caught.value)
        rejects(DockerRunConfig, "image", image=None)

    @given(image=rs.image_references())
    def test_valid_references_accepted_as_written(self, image: str) -> None:
        assert DockerRunConfig(image=image).image == image
        assert KubernetesRunConfig(image=image).image == image

    @given(image=rs.invalid_image_references())
    def test_invalid_references_rejected(self, image: str) -> None:
        rejects(DockerRunConfig, "image", image=image)
        rejects(KubernetesRunConfig, "image", image=image)

    @pytest.mark.parametrize(
        "image",
        [
            "ubuntu",
            "ubuntu:22.04",
            "library/ubuntu",
            "ghcr.io/slac/lume-services:1.0",
            "localhost:5000/lume",
            "registry.example.com:443/a/b/c:tag_1",
            "Registry.Example.com/lume",
            "lume@sha256:" + "a" * 64,
            "lume:1.0@sha256:" + "0" * 64,
            "[::1]:5000/lume",
            "my__image",
            "my--image",
        ],
    )
    def test_known_valid(self, image: str) -> None:
        assert DockerRunConfig(image=image).image == image

    @pytest.mark.parametrize(
        "image", ["ubuntu@", "ubuntu:t\u00e9", "ubuntu:\u0661\u0662", "Ubuntu", "ubuntu:", "ubuntu@sha256:abc"]
    )
    def test_known_invalid(self, image: str) -> None:
        rejects(DockerRunConfig, "image", image=image)


class TestPorts:
    @given(ports=rs.ports())
    def test_valid_ports_kept(self, ports: Any) -> None:
        assert DockerRunConfig(image="ubuntu", ports=ports).ports == ports

    @pytest.mark.parametrize("ports", [[0], [65536], [-1], [80, 80], [True], [False], ["80"], [8.0], "80", 80])
    def test_invalid_ports_rejected(self, ports: Any) -> None:
        rejects(DockerRunConfig, "ports", ports=ports)

    def test_bounds_accepted(self) -> None:
        assert DockerRunConfig(image="ubuntu", ports=[1, 65535]).ports == [1, 65535]


class TestHostConfig:
    @pytest.mark.parametrize(
        "host_config",
        [
            {"shm_size": ["x"]},
            {"nano_cpus": "0"},
            {"no_such_option": 1},
            {"shm_size": "infk"},
            {"shm_size": "12x"},
            {"mem_limit": True},
            {"mem_limit": -1},
            "shm_size=1g",
        ],
    )
    def test_bad_values_rejected(self, host_config: Any) -> None:
        rejects(DockerRunConfig, "host_config", host_config=host_config)

    @given(host_config=rs.host_configs(), version=rs.docker_api_versions())
    def test_valid_host_configs_kept(self, host_config: Any, version: Any) -> None:
        config = DockerRunConfig(image="ubuntu", host_config=host_config, docker_api_version=version)
        assert config.host_config == host_config

    def test_checked_at_the_configured_api_version(self) -> None:
        # nano_cpus arrived with Docker API 1.25.
        assert DockerRunConfig(image="u", host_config={"nano_cpus": 10**9}, docker_api_version="1.25")
        error = rejects(
            DockerRunConfig, "host_config", host_config={"nano_cpus": 10**9}, docker_api_version="1.24"
        )
        assert "1.24" in str(error)

    def test_default_version_is_docker_pys(self) -> None:
        config = DockerRunConfig(image="u", host_config={"shm_size": "1g"})
        assert config.docker_api_version is None
        error = rejects(DockerRunConfig, "host_config", host_config={"no_such_option": 1})
        assert DEFAULT_DOCKER_API_VERSION in str(error)

    @pytest.mark.parametrize("version", ["1", "v1.41", "1.x", "", "1.41.0", 1.41])
    def test_bad_api_version_rejected(self, version: Any) -> None:
        rejects(DockerRunConfig, "docker_api_version", docker_api_version=version)

    def test_changing_the_api_version_rechecks_host_config(self) -> None:
        config = DockerRunConfig(image="u", host_config={"nano_cpus": 10**9}, docker_api_version="1.41")
        with pytest.raises(ValidationError) as caught:
            config.docker_api_version = "1.24"
        assert "docker_api_version" in error_locations(caught.value)
        assert config.docker_api_version == "1.41"

    def test_never_asks_a_docker_daemon(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def explode(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the domain tried to reach a Docker daemon")

        monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
        monkeypatch.setattr(docker.APIClient, "__init__", explode)
        monkeypatch.setattr(docker.DockerClient, "__init__", explode)
        monkeypatch.setattr(docker, "from_env", explode)
        monkeypatch.setattr(socket.socket, "connect", explode)
        for version in (None, "1.25", "1.41"):
            config = DockerRunConfig(
                image="u", docker_api_version=version, host_config={"shm_size": "1g", "nano_cpus": 10**9}
            )
            assert config.host_config == {"shm_size": "1g", "nano_cpus": 10**9}
        rejects(DockerRunConfig, "host_config", host_config={"nano_cpus": "0"})

    def test_never_asks_a_docker_daemon_in_a_fresh_process(self) -> None:
        # A fresh interpreter: nothing of docker imported yet, DOCKER_HOST on a
        # closed port, and every socket connection refused loudly.
        code = textwrap.dedent(
            """
            import socket
            def explode(*args, **kwargs):
                raise SystemExit("connect() called")
            socket.socket.connect = explode
            socket.create_connection = explode
            from lume_scheduling.domain import DockerRunConfig
            config = DockerRunConfig(image="u", host_config={"shm_size": "1g"})
            print(config.host_config)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "DOCKER_HOST": "tcp://127.0.0.1:9"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "shm_size" in done.stdout


class TestKubernetesQuantities:
    FIELDS = ["cpu_limit", "cpu_request", "memory_limit", "memory_request"]

    @pytest.mark.parametrize("field", FIELDS)
    @pytest.mark.parametrize("value", ["1.5Gi", "512Mi", "1e3", "129e6", "100m", "0.5", "2", "1", "1Gi", "0"])
    def test_valid_quantities_kept_exactly_as_written(self, field: str, value: str) -> None:
        other = field.replace("limit", "request") if "limit" in field else field.replace("request", "limit")
        # The other side of the pair is left unbounded so that only this rule counts.
        config = KubernetesRunConfig(**{field: value, other: None})
        assert getattr(config, field) == value
        assert type(getattr(config, field)) is str
        assert KubernetesRunConfig.parse_raw(config.json()) == config
        assert getattr(KubernetesRunConfig.parse_raw(config.json()), field) == value

    @pytest.mark.parametrize("field", FIELDS)
    @pytest.mark.parametrize("value", ["Gi", "1GiB", "1 Gi", "abc", "", "-1", "-0.5Gi", True, [1], -1, float("nan")])
    def test_invalid_quantities_rejected(self, field: str, value: Any) -> None:
        rejects(KubernetesRunConfig, field, **{field: value})

    def test_numbers_kept_as_numbers(self) -> None:
        config = KubernetesRunConfig(cpu_limit=2, cpu_request=0.25, memory_limit=2**30, memory_request=2**20)
        assert (config.cpu_limit, config.cpu_request) == (2, 0.25)
        assert type(config.cpu_limit) is int and type(config.cpu_request) is float
        assert (config.memory_limit, config.memory_request) == (2**30, 2**20)

    def test_memory_takes_no_float(self) -> None:
        rejects(KubernetesRunConfig, "memory_limit", memory_limit=1.5)

    def test_defaults_are_the_seeds(self) -> None:
        config = KubernetesRunConfig()
        assert (config.cpu_limit, config.cpu_request) == (1.0, 0.5)
        assert (config.memory_limit, config.memory_request) == (None, None)

    @pytest.mark.parametrize(
        "resource, limit, asked",
        [("cpu", "500m", "501m"), ("cpu", 1, "1.001"), ("memory", "1Gi", "1073741825"), ("memory", "1e3", "1.001k")],
    )
    def test_request_above_limit_rejected_at_the_request(self, resource: str, limit: Any, asked: Any) -> None:
        error = rejects(
            KubernetesRunConfig, f"{resource}_request", **{f"{resource}_limit": limit, f"{resource}_request": asked}
        )
        assert f"{resource}_limit" in str(error)

    @pytest.mark.parametrize(
        "resource, limit, asked",
        [("cpu", "500m", "0.5"), ("cpu", 1, "1000m"), ("memory", "1Gi", 2**30), ("memory", "1e3", "1k")],
    )
    def test_request_equal_to_limit_accepted(self, resource: str, limit: Any, asked: Any) -> None:
        config = KubernetesRunConfig(**{f"{resource}_limit": limit, f"{resource}_request": asked})
        assert config.resource_value(f"{resource}_request") == config.resource_value(f"{resource}_limit")

    def test_request_above_default_limit_rejected(self) -> None:
        rejects(KubernetesRunConfig, "cpu_request", cpu_request="2")

    def test_lowering_a_limit_below_its_request_rejected(self) -> None:
        config = KubernetesRunConfig(memory_limit="2Gi", memory_request="1Gi")
        with pytest.raises(ValidationError) as caught:
            config.memory_limit = "512Mi"
        assert "memory_limit" in error_locations(caught.value)
        assert config.memory_limit == "2Gi"

    def test_raising_a_request_above_its_limit_rejected(self) -> None:
        config = KubernetesRunConfig(cpu_limit="2", cpu_request="1")
        with pytest.raises(ValidationError):
            config.cpu_request = "3"
        assert config.cpu_request == "1"

    def test_resource_value_is_exact(self) -> None:
        config = KubernetesRunConfig(memory_limit="1.5Gi", cpu_limit="100m", cpu_request="1m")
        assert config.resource_value("memory_limit") == Decimal(3 * 2**29)
        assert config.resource_value("cpu_limit") == Decimal("0.1")
        assert config.resource_value("memory_request") is None


class TestJobTemplate:
    TEMPLATE = {"apiVersion": "batch/v1", "kind": "Job"}

    def test_mapping_kept(self) -> None:
        assert KubernetesRunConfig(job_template=self.TEMPLATE).job_template == self.TEMPLATE

    def test_yaml_text_read(self) -> None:
        config = KubernetesRunConfig(job_template="apiVersion: batch/v1\nkind: Job\n")
        assert config.job_template == self.TEMPLATE

    def test_both_template_and_path_rejected(self, job_template_file: Path) -> None:
        error = rejects(
            KubernetesRunConfig,
            "job_template_path",
            job_template=self.TEMPLATE,
            job_template_path=str(job_template_file),
        )
        assert "not both" in str(error)

    def test_assigning_the_second_template_rejected(self) -> None:
        config = KubernetesRunConfig(job_template_path="s3://bucket/job.yaml")
        with pytest.raises(ValidationError) as caught:
            config.job_template = self.TEMPLATE
        assert "job_template" in error_locations(caught.value)
        assert config.job_template is None

    def test_existing_local_file_accepted(self, job_template_file: Path) -> None:
        for path in (str(job_template_file), f"file://{job_template_file}", job_template_file):
            assert KubernetesRunConfig(job_template_path=path).job_template_path == str(path)

    @pytest.mark.parametrize(
        "path", ["s3://bucket/jobs/job.yaml", "gcs://bucket/job.yaml", "agent://default", "S3://Bucket/Job.yaml"]
    )
    def test_remote_paths_kept_as_written(self, path: str) -> None:
        assert KubernetesRunConfig(job_template_path=path).job_template_path == path

    def test_missing_file_rejected(self, tmp_path: Path) -> None:
        rejects(KubernetesRunConfig, "job_template_path", job_template_path=str(tmp_path / "none.yaml"))

    def test_directory_rejected(self, tmp_path: Path) -> None:
        rejects(KubernetesRunConfig, "job_template_path", job_template_path=str(tmp_path))

    @pytest.mark.parametrize("path", ["http://example.com/job.yaml", "ftp://host/job.yaml", 5])
    def test_unsupported_paths_rejected(self, path: Any) -> None:
        rejects(KubernetesRunConfig, "job_template_path", job_template_path=path)

    @pytest.mark.parametrize("content", ["- a list\n", "just text\n", "kind: [Job\n", "", b"\xff\xfe".decode("latin-1")])
    def test_file_without_a_yaml_mapping_rejected(self, tmp_path: Path, content: str) -> None:
        path = tmp_path / "job.yaml"
        path.write_text(content, encoding="utf-8")
        rejects(KubernetesRunConfig, "job_template_path", job_template_path=str(path))

    def test_non_utf8_file_rejected(self, tmp_path: Path) -> None:
        path = tmp_path / "job.yaml"
        path.write_bytes(b"kind: \xff\xfe\n")
        rejects(KubernetesRunConfig, "job_template_path", job_template_path=str(path))

    @pytest.mark.parametrize("text", ["- a\n- b\n", "kind: [Job", "text", 5, ["kind"]])
    def test_inline_template_must_be_a_yaml_mapping(self, text: Any) -> None:
        rejects(KubernetesRunConfig, "job_template", job_template=text)

    def test_deeply_nested_yaml_is_a_validation_error(self, tmp_path: Path) -> None:
        # Well-formed, but deep enough that PyYAML's recursion runs out.
        nested = "a: " + "[" * 700 + "]" * 700
        rejects(KubernetesRunConfig, "job_template", job_template=nested)
        path = tmp_path / "job.yaml"
        path.write_text(nested, encoding="utf-8")
        rejects(KubernetesRunConfig, "job_template_path", job_template_path=str(path))

    def test_unsafe_yaml_tags_never_run(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran"
        payload = f"!!python/object/apply:os.system ['touch {marker}']\n"
        mapping_payload = f"spec: !!python/object/apply:os.system ['touch {marker}']\n"
        for text in (payload, mapping_payload):
            rejects(KubernetesRunConfig, "job_template", job_template=text)
            path = tmp_path / "job.yaml"
            path.write_text(text, encoding="utf-8")
            rejects(KubernetesRunConfig, "job_template_path", job_template_path=str(path))
        assert not marker.exists()


class TestImagePullPolicy:
    @pytest.mark.parametrize("policy", ["Always", "IfNotPresent", "Never"])
    def test_known_policies(self, policy: str) -> None:
        assert KubernetesRunConfig(image_pull_policy=policy).image_pull_policy == policy

    def test_default_if_not_present(self) -> None:
        assert KubernetesRunConfig().image_pull_policy == "IfNotPresent"

    @pytest.mark.parametrize("policy", ["always", "Sometimes", "", None, 1])
    def test_others_rejected(self, policy: Any) -> None:
        rejects(KubernetesRunConfig, "image_pull_policy", image_pull_policy=policy)


class TestPullSecretsAndServiceAccount:
    def test_pull_secrets_kept(self) -> None:
        assert KubernetesRunConfig(image_pull_secrets=["regcred"]).image_pull_secrets == ["regcred"]

    @pytest.mark.parametrize("secrets", [[""], [" regcred"], [1], "regcred"])
    def test_bad_pull_secrets_rejected(self, secrets: Any) -> None:
        rejects(KubernetesRunConfig, "image_pull_secrets", image_pull_secrets=secrets)

    def test_service_account_must_be_text(self) -> None:
        rejects(KubernetesRunConfig, "service_account_name", service_account_name=5)


@pytest.mark.parametrize("model", ALL_MODELS)
class TestUnknownFields:
    def test_unknown_field_rejected(self, model: type) -> None:
        rejects(model, "no_such_field", no_such_field=1)


class TestParseRunConfig:
    @pytest.mark.parametrize(
        "kind, model, data",
        [
            ("local", LocalRunConfig, {"labels": ["a"]}),
            ("docker", DockerRunConfig, {"image": "ubuntu"}),
            ("kubernetes", KubernetesRunConfig, {"cpu_limit": "2"}),
        ],
    )
    def test_builds_the_named_kind(self, kind: str, model: type, data: Dict[str, Any]) -> None:
        config = parse_run_config(kind, data)
        assert type(config) is model and config == model(**data)

    def test_unknown_kind_is_a_value_error_naming_the_kinds(self) -> None:
        with pytest.raises(ValueError, match="local, docker, kubernetes"):
            parse_run_config("slurm", {})

    def test_bad_data_is_a_validation_error(self) -> None:
        with pytest.raises(ValidationError):
            parse_run_config("docker", {})
