"""Server settings in lume-services' shape: ``PrefectServerConfig(host=...,
host_port=...)`` and ``DockerBackend(config=PrefectConfig(server=..., ui=...))``,
mapped onto `PrefectServerConfig` with nothing global changed."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

import prefect
import pydantic
import pytest
from pydantic import BaseModel, Field

from lume_scheduling.adapters import PrefectConfig as PublicPrefectConfig
from lume_scheduling.adapters.server import (
    DockerBackend,
    KubernetesBackend,
    PrefectAgentConfig,
    PrefectConfig,
    PrefectServerConfig,
    PrefectTelemetryConfig,
    PrefectUIConfig,
    server_config_from,
)


# lume-services' own configuration models, field for field (its
# services/scheduling/backends/server.py), as a service still importing them has.
class TheirServerConfig(BaseModel):
    tag: str = "core-1.4.0"
    host: str = "http://localhost"
    host_port: str = "4200"
    host_ip: str = "127.0.0.1"


class TheirUIConfig(BaseModel):
    host: str = "http://localhost"
    host_port: str = "8080"
    host_ip: str = "127.0.0.1"
    apollo_url: str = "http://localhost:4200/graphql"


class TheirTelemetryConfig(BaseModel):
    enabled: bool = True


class TheirAgentConfig(BaseModel):
    host: str = "http://localhost"
    host_port: str = "5000"


class TheirPrefectConfig(BaseModel):
    server: TheirServerConfig = TheirServerConfig()
    ui: TheirUIConfig = TheirUIConfig()
    telemetry: TheirTelemetryConfig = TheirTelemetryConfig()
    agent: TheirAgentConfig = TheirAgentConfig()
    home_dir: str = "~/.prefect"
    debug: bool = False
    backend: Literal["server", "cloud"] = "server"
    default_image: str = Field("jgarrahan/lume-services-prefect:latest", alias="image")
    isolated: bool = False


class TestServerConfigTakesLumeServicesNames:
    @pytest.mark.parametrize("port", [4300, "4300"])
    def test_host_and_host_port_make_the_api_url(self, port: Any) -> None:
        config = PrefectServerConfig(host="http://prefect.example.org", host_port=port)
        assert config.api_url == "http://prefect.example.org:4300"

    def test_either_may_be_left_out_with_lume_services_defaults(self) -> None:
        assert PrefectServerConfig(host_port=4201).api_url == "http://localhost:4201"
        assert PrefectServerConfig(host="https://server").api_url == "https://server:4200"

    def test_tag_and_host_ip_are_accepted_and_unused(self) -> None:
        config = PrefectServerConfig(tag="core-1.4.0", host_ip="0.0.0.0", host="http://localhost", host_port="4200")
        assert config == PrefectServerConfig(api_url="http://localhost:4200")

    @pytest.mark.parametrize(
        "fields, named",
        [
            ({"host": "localhost"}, "host must be a scheme and a host name"),
            ({"host": "http://localhost:4200"}, "the port goes in host_port"),
            ({"host": 4200}, "host must be a string"),
            ({"host_port": "42x"}, "host_port must be a port number"),
            ({"host_port": 0}, "host_port must be a port number"),
            ({"host_port": True}, "host_port must be a port number"),
            ({"api_url": "http://a:1/graphql", "host": "http://b"}, "api_url or lume-services' host"),
        ],
    )
    def test_bad_values_are_refused_by_name(self, fields: dict, named: str) -> None:
        with pytest.raises(pydantic.ValidationError, match=named):
            PrefectServerConfig(**fields)

    def test_other_unknown_names_are_still_refused(self) -> None:
        with pytest.raises(pydantic.ValidationError, match="hostname"):
            PrefectServerConfig(hostname="http://localhost")


class TestPrefectConfig:
    def test_lume_services_documented_example(self) -> None:
        # lume-services' docs/config.md
        prefect_config = PrefectConfig(
            server=PrefectServerConfig(host="http://localhost", host_port=4200),
        )
        config = prefect_config.server_config()
        assert config.api_url == "http://localhost:4200"
        assert config.ui_url == "http://localhost:8080"
        assert config.default_image is None
        assert PublicPrefectConfig is PrefectConfig

    def test_every_lume_services_field_is_accepted(self) -> None:
        prefect_config = PrefectConfig(
            server=PrefectServerConfig(host="http://server", host_port="4300", tag="core-1.4.0", host_ip="0.0.0.0"),
            ui=PrefectUIConfig(host="http://ui", host_port=9090, host_ip="0.0.0.0", apollo_url="http://server:4300/graphql"),
            telemetry=PrefectTelemetryConfig(enabled=False),
            agent=PrefectAgentConfig(host="http://agent", host_port="5001"),
            home_dir="/somewhere/.prefect",
            debug=True,
            backend="server",
            image="ghcr.io/slac-ml/lume-services:1.0",
            isolated=True,
        )
        config = prefect_config.server_config()
        assert (config.api_url, config.ui_url, config.default_image) == (
            "http://server:4300",
            "http://ui:9090",
            "ghcr.io/slac-ml/lume-services:1.0",
        )
        assert PrefectConfig(default_image="python:3.11").server_config().default_image == "python:3.11"

    def test_the_servers_own_settings_win(self) -> None:
        server = PrefectServerConfig(
            api_url="http://a:1/graphql", default_image="python:3.11", ui_url="http://ui:1", poll_interval=0.5
        )
        config = PrefectConfig(server=server, image="python:3.12").server_config()
        assert config == server

    @pytest.mark.parametrize(
        "fields, named",
        [
            ({"backend": "cloud"}, "backend 'cloud' is not supported"),
            ({"image": "Not An Image"}, "default_image"),
            ({"ui": {"host": "ui"}}, "ui.host must be a scheme"),
            ({"servers": {}}, "servers"),
        ],
    )
    def test_bad_values_are_refused_by_name(self, fields: dict, named: str) -> None:
        with pytest.raises(pydantic.ValidationError, match=named):
            PrefectConfig(**fields)

    def test_apply_changes_nothing_global_and_writes_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HOME", str(tmp_path))
        before = prefect.config.to_dict()
        prefect_config = PrefectConfig(
            server=PrefectServerConfig(host="http://elsewhere", host_port=4999), home_dir=str(tmp_path / ".prefect")
        )
        with pytest.warns(DeprecationWarning, match="changes nothing"):
            applied = prefect_config.apply()
        assert applied == prefect_config.server_config()
        assert prefect.config.to_dict() == before
        assert list(tmp_path.iterdir()) == []


class TestLumeServicesOwnConfigObject:
    def test_read_with_only_the_fields_that_were_set(self) -> None:
        theirs = TheirPrefectConfig(server=TheirServerConfig(host="http://server", host_port="4300"))
        config = PrefectConfig.from_lume_services(theirs).server_config()
        assert config.api_url == "http://server:4300"
        # Their default image was never used by their backends; it is not carried over.
        assert config.default_image is None
        assert PrefectConfig.from_lume_services(theirs.dict(exclude_unset=True)) == PrefectConfig.from_lume_services(theirs)

    def test_an_image_they_set_is_kept(self) -> None:
        theirs = TheirPrefectConfig(image="ghcr.io/slac-ml/lume-services:1.0")
        assert server_config_from(theirs).default_image == "ghcr.io/slac-ml/lume-services:1.0"

    def test_their_cloud_backend_is_refused(self) -> None:
        with pytest.raises(pydantic.ValidationError, match="backend"):
            server_config_from(TheirPrefectConfig(backend="cloud"))

    @pytest.mark.parametrize("bad", [3, "http://localhost:4200", {"server": {}}])
    def test_anything_else_is_a_type_error_naming_config(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="config must be"):
            server_config_from(bad)
        with pytest.raises(TypeError, match="config must be"):
            PrefectConfig.from_lume_services(3)


class TestBackendsTakeIt:
    @pytest.mark.parametrize("kind", [DockerBackend, KubernetesBackend])
    def test_config_keyword_takes_lume_services_shape(self, kind: Any) -> None:
        with kind(config=PrefectConfig(server=PrefectServerConfig(host="http://server", host_port=4300))) as backend:
            assert isinstance(backend.config, PrefectServerConfig)
            assert backend.config.api_url == "http://server:4300"
        with kind(config=TheirPrefectConfig(server=TheirServerConfig(host_port="4301"))) as backend:
            assert backend.config.api_url == "http://localhost:4301"

    def test_two_backends_keep_their_own_servers(self) -> None:
        first = DockerBackend(config=PrefectConfig(server=PrefectServerConfig(host_port=4300)))
        second = DockerBackend(config=PrefectConfig(server=PrefectServerConfig(host_port=4400)))
        with first, second:
            assert (first.config.api_url, second.config.api_url) == ("http://localhost:4300", "http://localhost:4400")

    def test_anything_else_is_a_type_error(self) -> None:
        with pytest.raises(TypeError, match="config must be a PrefectServerConfig, a PrefectConfig"):
            DockerBackend(config=object())

    def test_nothing_is_written_to_home(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HOME", str(tmp_path))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with DockerBackend(config=TheirPrefectConfig()) as backend:
                assert backend.config.api_url == "http://localhost:4200/graphql"
        assert list(tmp_path.iterdir()) == []
        assert os.environ["HOME"] == str(tmp_path)
