"""Settings of the composition root: files, environment variables, errors and secrets."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from lume_scheduling.adapters.settings import (
    Settings,
    SettingsError,
    load_settings,
    read_settings_file,
    settings_from_environ,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "configs"
SECRET = "s3cr3t-api-key-value"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class TestDefaults:
    def test_no_file_and_no_environment_give_the_isolated_local_backend(self) -> None:
        settings = load_settings(environ={})
        assert settings.backend == "local"
        assert settings.local.isolated is True
        assert settings.local.max_workers is None
        assert settings.server.api_url == "http://localhost:4200/graphql"
        assert settings.server.api_key is None
        assert settings.fake.server is True


class TestSettingsFiles:
    SAME = {
        "settings.toml": 'backend = "fake"\n[local]\nmax_workers = 3\n[fake]\nserver = false\n',
        "settings.yaml": "backend: fake\nlocal:\n  max_workers: 3\nfake:\n  server: false\n",
        "settings.yml": "backend: fake\nlocal: {max_workers: 3}\nfake: {server: false}\n",
        "settings.json": json.dumps({"backend": "fake", "local": {"max_workers": 3}, "fake": {"server": False}}),
    }

    @pytest.mark.parametrize("name", sorted(SAME))
    def test_toml_yaml_and_json_files_give_the_same_settings(self, tmp_path: Path, name: str) -> None:
        settings = load_settings(write(tmp_path / name, self.SAME[name]), environ={})
        assert (settings.backend, settings.local.max_workers, settings.fake.server) == ("fake", 3, False)

    @pytest.mark.parametrize("name", ["local.toml", "docker.toml", "kubernetes.yaml", "fake.yaml", "dask.toml"])
    def test_each_example_settings_file_loads_with_its_backend(self, name: str) -> None:
        settings = load_settings(EXAMPLES / name, environ={})
        assert settings.backend == name.split(".")[0]

    def test_example_server_settings_are_read_field_by_field(self) -> None:
        settings = load_settings(EXAMPLES / "kubernetes.yaml", environ={})
        assert settings.server.api_url == "https://prefect.example.org/graphql"
        assert settings.server.tenant_id == "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
        assert settings.server.agent_check_after == 120
        assert settings.server.default_image == "registry.example.org/lume/flows:1.0"

    def test_a_dict_is_validated_like_a_file(self) -> None:
        settings = Settings.from_mapping({"backend": "docker", "server": {"api_key": SECRET}})
        assert settings.backend == "docker"
        assert settings.server.api_key == SecretStr(SECRET)


class TestEnvironment:
    def test_backend_and_section_keys_come_from_prefixed_variables(self) -> None:
        settings = load_settings(
            environ={
                "LUME_SCHEDULING_BACKEND": "kubernetes",
                "LUME_SCHEDULING_LOCAL__MAX_WORKERS": "4",
                "LUME_SCHEDULING_LOCAL__ISOLATED": "false",
                "LUME_SCHEDULING_SERVER__API_URL": "https://prefect.example.org/graphql",
                "LUME_SCHEDULING_SERVER__API_KEY": SECRET,
                "LUME_SCHEDULING_FAKE__SERVER": "0",
            }
        )
        assert settings.backend == "kubernetes"
        assert settings.local.max_workers == 4
        assert settings.local.isolated is False
        assert settings.server.api_url == "https://prefect.example.org/graphql"
        assert settings.server.api_key is not None
        assert settings.server.api_key.get_secret_value() == SECRET
        assert settings.fake.server is False

    def test_environment_wins_over_the_file_and_overrides_win_over_both(self, tmp_path: Path) -> None:
        file = write(tmp_path / "s.toml", 'backend = "docker"\n[local]\nmax_workers = 1\n')
        environ = {"LUME_SCHEDULING_BACKEND": "kubernetes", "LUME_SCHEDULING_LOCAL__MAX_WORKERS": "2"}
        settings = load_settings(file, environ=environ)
        assert (settings.backend, settings.local.max_workers) == ("kubernetes", 2)
        overridden = load_settings(file, environ=environ, overrides={"backend": "fake"})
        assert (overridden.backend, overridden.local.max_workers) == ("fake", 2)

    def test_prefixed_names_without_a_section_separator_are_not_settings(self) -> None:
        data, _ = settings_from_environ(
            {"LUME_SCHEDULING_EXAMPLE": "x", "LUME_SCHEDULING_CONFIG": "y.toml", "HOME": "/h"}
        )
        assert data == {}

    def test_an_unknown_key_names_its_environment_variable(self) -> None:
        with pytest.raises(SettingsError) as caught:
            load_settings(environ={"LUME_SCHEDULING_SERVER__API_ULR": "http://x/graphql"})
        assert caught.value.problems == [
            ("server.api_ulr (LUME_SCHEDULING_SERVER__API_ULR)", "unknown key")
        ]

    @given(st.integers(min_value=-1000, max_value=1000))
    def test_max_workers_from_the_environment_is_a_positive_integer(self, number: int) -> None:
        environ = {"LUME_SCHEDULING_LOCAL__MAX_WORKERS": str(number)}
        if number >= 1:
            assert load_settings(environ=environ).local.max_workers == number
        else:
            with pytest.raises(SettingsError) as caught:
                load_settings(environ=environ)
            (location, message), = caught.value.problems
            assert location == "local.max_workers (LUME_SCHEDULING_LOCAL__MAX_WORKERS)"
            assert "greater than or equal to 1" in message


class TestInvalidSettings:
    @pytest.mark.parametrize(
        "text, location, words",
        [
            ('backend = "cloud"\n', "backend", "unexpected value"),
            ('colour = "blue"\n', "colour", "unknown key"),
            ("[local]\nmax_workers = 0\n", "local.max_workers", "greater than or equal to 1"),
            ('[local]\nmax_workers = "many"\n', "local.max_workers", "not a valid integer"),
            ('[local]\nisolated = "sometimes"\n', "local.isolated", "is not a valid boolean"),
            ("[local]\nthreads = 2\n", "local.threads", "unknown key"),
            ('[server]\napi_url = "localhost:4200"\n', "server.api_url", "http(s) URL"),
            ('[server]\ndefault_image = "Not An Image"\n', "server.default_image", "not a valid image"),
            ("[server]\npoll_interval = \"often\"\n", "server.poll_interval", "not a valid float"),
            ('local = 3\n', "local", "value is not a valid dict"),
        ],
    )
    def test_a_bad_key_or_value_is_named_with_the_file(
        self, tmp_path: Path, text: str, location: str, words: str
    ) -> None:
        file = write(tmp_path / "bad.toml", text)
        with pytest.raises(SettingsError) as caught:
            load_settings(file, environ={})
        assert [problem[0] for problem in caught.value.problems] == [location]
        assert words in caught.value.problems[0][1]
        assert str(file) in str(caught.value)

    def test_every_problem_gets_its_own_line(self, tmp_path: Path) -> None:
        file = write(tmp_path / "bad.yaml", "backend: cloud\nlocal: {max_workers: -1, threads: 2}\n")
        with pytest.raises(SettingsError) as caught:
            load_settings(file, environ={})
        lines = str(caught.value).splitlines()
        assert len(lines) == 3
        assert all(line.startswith(f"settings file {str(file)!r}: ") for line in lines)

    @pytest.mark.parametrize(
        "name, text, words",
        [
            ("s.toml", "backend = \n", "not valid TOML"),
            ("s.yaml", "backend: [local\n", "not valid YAML"),
            ("s.json", "{backend: 1}", "not valid JSON"),
            ("s.yaml", "- local\n- docker\n", "must hold a mapping"),
            ("s.ini", "backend=local", "unknown file type '.ini'"),
        ],
    )
    def test_a_file_that_does_not_parse_says_why(self, tmp_path: Path, name: str, text: str, words: str) -> None:
        with pytest.raises(SettingsError, match="settings file") as caught:
            read_settings_file(write(tmp_path / name, text))
        assert words in str(caught.value)

    def test_a_missing_file_is_a_settings_error(self, tmp_path: Path) -> None:
        with pytest.raises(SettingsError, match="cannot be read: No such file"):
            read_settings_file(tmp_path / "missing.toml")


class TestHostileYaml:
    def test_a_python_tag_is_rejected_and_never_runs(self, tmp_path: Path) -> None:
        marker = Path("/tmp") / f"pwned-{uuid.uuid4()}"
        file = write(
            tmp_path / "evil.yaml",
            f'backend: !!python/object/apply:os.system ["touch {marker}"]\n',
        )
        with pytest.raises(SettingsError, match="could not determine a constructor"):
            load_settings(file, environ={})
        assert not marker.exists()


class TestSecrets:
    def test_the_api_key_never_shows_in_repr_str_or_public_dict(self) -> None:
        settings = load_settings(environ={"LUME_SCHEDULING_SERVER__API_KEY": SECRET})
        assert SECRET not in repr(settings)
        assert SECRET not in str(settings)
        assert SECRET not in json.dumps(settings.public_dict())
        assert settings.public_dict()["server"]["api_key"] == "**********"

    def test_an_error_elsewhere_in_a_file_with_a_key_does_not_echo_the_key(self, tmp_path: Path) -> None:
        # An unterminated quote: PyYAML's own message would quote this very line.
        file = write(tmp_path / "s.yaml", f'server:\n  api_key: "{SECRET}\n  api_url: nope\n')
        with pytest.raises(SettingsError) as caught:
            load_settings(file, environ={})
        assert SECRET not in str(caught.value)
        # Not even in a --debug traceback: PyYAML's message (which quotes the line) is not chained.
        assert caught.value.__cause__ is None and caught.value.__context__ is None
        file = write(tmp_path / "t.yaml", f"server:\n  api_key: {SECRET}\n  api_url: nope\n")
        with pytest.raises(SettingsError) as caught:
            load_settings(file, environ={})
        assert SECRET not in str(caught.value)
        assert "server.api_url" in str(caught.value)


class TestServerSectionCheckedByTheServerBackends:
    def test_a_value_the_server_backends_reject_is_named_with_its_origin(self) -> None:
        with pytest.raises(SettingsError) as caught:
            load_settings(environ={"LUME_SCHEDULING_SERVER__TENANT_ID": "lume"})
        ((location, message),) = caught.value.problems
        assert location == "server.tenant_id (LUME_SCHEDULING_SERVER__TENANT_ID)"
        assert "UUID" in message

    def test_keys_left_out_keep_the_server_backends_defaults(self) -> None:
        from lume_scheduling.adapters.server import PrefectServerConfig

        settings = load_settings(environ={"LUME_SCHEDULING_SERVER__POLL_INTERVAL": "0.25"})
        assert settings.server.backend_options() == {"poll_interval": 0.25}
        config = PrefectServerConfig.parse_obj(settings.server.backend_options())
        assert config.poll_interval == 0.25
        assert config.request_timeout == PrefectServerConfig().request_timeout
