"""Settings are not coerced: each key takes its own type, and every problem
names the key and where it came from (file or environment variable)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lume_scheduling.adapters.settings import Settings, SettingsError, load_settings, settings_from_environ


def problems_of(data: Dict[str, Any], tmp_path: Path) -> Any:
    file = tmp_path / "settings.json"
    file.write_text(json.dumps(data))
    with pytest.raises(SettingsError) as raised:
        load_settings(file, environ={})
    assert all(str(file) in line for line in raised.value.lines())
    return raised.value.problems


class TestFilesAreNotCoerced:
    @pytest.mark.parametrize(
        "section, key, value",
        [
            ("local", "max_workers", 2.5),
            ("local", "max_workers", True),
            ("local", "max_workers", "2"),
            ("local", "isolated", "yes"),
            ("local", "isolated", 1),
            ("fake", "server", "false"),
            ("server", "request_retries", 1.0),
            ("server", "request_timeout", "15"),
            ("server", "poll_interval", False),
            ("server", "tenant_id", 5),
            ("server", "api_key", 12345),
            ("server", "api_url", ["http://x/graphql"]),
        ],
    )
    def test_a_value_of_the_wrong_type_is_refused_naming_the_key(
        self, tmp_path: Path, section: str, key: str, value: Any
    ) -> None:
        ((location, message),) = problems_of({section: {key: value}}, tmp_path)
        assert location == f"{section}.{key}"
        assert "12345" not in message  # an API key is never echoed

    def test_values_of_the_right_type_are_kept(self, tmp_path: Path) -> None:
        file = tmp_path / "settings.toml"
        file.write_text("[local]\nmax_workers = 2\nisolated = false\n[server]\nrequest_timeout = 15\npoll_interval = 0.5\n")
        settings = load_settings(file, environ={})
        assert (settings.local.max_workers, settings.local.isolated) == (2, False)
        assert (settings.server.request_timeout, settings.server.poll_interval) == (15.0, 0.5)

    def test_a_container_config_is_just_as_strict(self) -> None:
        with pytest.raises(SettingsError, match=r"local\.isolated: value is not a valid boolean"):
            Settings.from_mapping({"local": {"isolated": "yes"}})


class TestEnvironmentVariables:
    @given(number=st.integers(min_value=1, max_value=10**6), spaced=st.booleans())
    def test_integers_are_read_from_their_text(self, number: int, spaced: bool) -> None:
        text = f" {number} " if spaced else str(number)
        assert load_settings(environ={"LUME_SCHEDULING_LOCAL__MAX_WORKERS": text}).local.max_workers == number

    @pytest.mark.parametrize("text", ["2.5", "true", "two", "0x2", ""])
    def test_text_that_is_not_an_integer_is_refused_naming_the_variable(self, text: str) -> None:
        with pytest.raises(SettingsError) as raised:
            load_settings(environ={"LUME_SCHEDULING_LOCAL__MAX_WORKERS": text})
        ((location, _),) = raised.value.problems
        assert location == "local.max_workers (LUME_SCHEDULING_LOCAL__MAX_WORKERS)"

    @pytest.mark.parametrize(
        "text, value", [("true", True), ("FALSE", False), ("yes", True), ("off", False), ("1", True), ("0", False)]
    )
    def test_booleans_are_read_from_their_words(self, text: str, value: bool) -> None:
        assert load_settings(environ={"LUME_SCHEDULING_LOCAL__ISOLATED": text}).local.isolated is value

    def test_a_boolean_word_that_is_not_one_is_refused(self) -> None:
        with pytest.raises(SettingsError, match=r"local\.isolated \(LUME_SCHEDULING_LOCAL__ISOLATED\): value is not a valid boolean"):
            load_settings(environ={"LUME_SCHEDULING_LOCAL__ISOLATED": "sometimes"})

    @pytest.mark.parametrize(
        "name",
        ["LUME_SCHEDULING_LOCAL__MAX_WORKERS__X", "LUME_SCHEDULING_BACKEND__X", "LUME_SCHEDULING_LOCAL__", "LUME_SCHEDULING___X"],
    )
    def test_a_variable_that_names_no_single_key_is_refused_by_name(self, name: str) -> None:
        # Next to a valid variable for the same key it is not silently dropped either.
        environ = {name: "1", "LUME_SCHEDULING_LOCAL__MAX_WORKERS": "2"}
        with pytest.raises(SettingsError) as raised:
            settings_from_environ(environ)
        ((location, message),) = raised.value.problems
        assert location.endswith(f"({name})")
        assert "LUME_SCHEDULING_<SECTION>__<KEY>" in message

    def test_an_unknown_section_names_its_variables(self) -> None:
        with pytest.raises(SettingsError) as raised:
            load_settings(environ={"LUME_SCHEDULING_COLOUR__X": "1", "LUME_SCHEDULING_COLOUR__Y": "2"})
        assert raised.value.problems == [
            ("colour (LUME_SCHEDULING_COLOUR__X, LUME_SCHEDULING_COLOUR__Y)", "unknown key")
        ]
