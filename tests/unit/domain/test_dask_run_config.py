"""The rules of `DaskRunConfig` (issue 13): Dask worker resources, a working
directory entered on the worker, labels recorded."""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from lume_scheduling.adapters.testing import strategies as rs
from lume_scheduling.domain import RUN_CONFIG_TYPES, DaskRunConfig, parse_run_config


def _locations(error: ValidationError) -> list:
    return [str(item["loc"][0]) for item in error.errors()]


class TestValidDaskRunConfigs:
    @given(kwargs=rs.dask_run_config_kwargs())
    def test_every_field_kept_and_the_config_round_trips(self, kwargs: Dict[str, Any]) -> None:
        config = DaskRunConfig(**kwargs)
        assert config.labels == kwargs.get("labels", ["lume-services"])
        assert config.env == kwargs.get("env")
        if kwargs.get("working_dir") is not None:
            assert config.working_dir == os.path.abspath(kwargs["working_dir"])
            assert os.path.isabs(config.working_dir)
        else:
            assert config.working_dir is None
        assert config.resources == kwargs.get("resources")
        for name, amount in (config.resources or {}).items():
            assert type(amount) is type(kwargs["resources"][name])
        again = DaskRunConfig.parse_raw(config.json())
        assert again == config

    @given(resources=rs.dask_resources().filter(bool))
    def test_positive_finite_amounts_are_accepted(self, resources: Dict[str, Any]) -> None:
        assert DaskRunConfig(resources=resources).resources == resources

    def test_a_working_dir_that_does_not_exist_here_is_kept(self, tmp_path: Any) -> None:
        # It is entered on the Dask worker, which may be another machine.
        missing = str(tmp_path / "on-the-cluster-only")
        assert DaskRunConfig(working_dir=missing).working_dir == missing

    def test_parsed_by_kind_and_listed_with_the_others(self) -> None:
        assert RUN_CONFIG_TYPES["dask"] is DaskRunConfig
        config = parse_run_config("dask", {"resources": {"GPU": 1}, "labels": ["gpu"]})
        assert isinstance(config, DaskRunConfig)
        assert config.resources == {"GPU": 1}

    def test_defaults(self) -> None:
        config = DaskRunConfig()
        assert config.resources is None and config.working_dir is None
        assert config.labels == ["lume-services"]


class TestInvalidDaskRunConfigs:
    @given(case=rs.invalid_run_config_kwargs(models=(DaskRunConfig,)))
    def test_one_broken_rule_is_reported_at_its_field(self, case: Tuple[type, Dict[str, Any], str]) -> None:
        model, kwargs, field = case
        with pytest.raises(ValidationError) as raised:
            model(**kwargs)
        assert field in _locations(raised.value), raised.value.errors()

    @pytest.mark.parametrize(
        "amount", [0, -1, -0.5, 0.0, math.nan, math.inf, -math.inf, True, "1", None, [1]]
    )
    def test_an_amount_that_is_not_a_positive_finite_number_names_the_resource(self, amount: Any) -> None:
        with pytest.raises(ValidationError) as raised:
            DaskRunConfig(resources={"GPU": amount})
        assert _locations(raised.value) == ["resources"]
        assert "resources['GPU']" in str(raised.value)

    @pytest.mark.parametrize("name", ["", " ", " GPU", "GPU ", 1, None])
    def test_a_bad_resource_name_is_refused(self, name: Any) -> None:
        with pytest.raises(ValidationError) as raised:
            DaskRunConfig(resources={name: 1})
        assert _locations(raised.value) == ["resources"]
        assert "resource name" in str(raised.value)

    @pytest.mark.parametrize("resources", ["GPU=1", ["GPU"], 1])
    def test_resources_must_be_a_mapping(self, resources: Any) -> None:
        with pytest.raises(ValidationError, match="resources must be a mapping"):
            DaskRunConfig(resources=resources)

    @given(huge=st.integers(min_value=10**400, max_value=10**401))
    def test_a_huge_int_is_an_amount_not_an_overflow(self, huge: int) -> None:
        assert DaskRunConfig(resources={"slots": huge}).resources == {"slots": huge}

    @pytest.mark.parametrize("path", ["", "dir\x00", 5, b"/"])
    def test_a_bad_working_dir_is_refused(self, path: Any) -> None:
        with pytest.raises(ValidationError) as raised:
            DaskRunConfig(working_dir=path)
        assert _locations(raised.value) == ["working_dir"]

    def test_assignment_is_checked_too(self) -> None:
        config = DaskRunConfig(resources={"GPU": 1})
        with pytest.raises(ValidationError, match="resources"):
            config.resources = {"GPU": -2}
        assert config.resources == {"GPU": 1}
