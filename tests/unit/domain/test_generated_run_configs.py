"""Run configs built from the shipped Hypothesis strategies, and from junk.

- Valid configs are accepted and survive a JSON round trip unchanged.
- One broken rule gives a ValidationError located at the broken field.
- Whatever junk goes into any field, construction raises ValidationError or
  nothing: never another exception type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Tuple

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
)

MODELS = (RunConfig, LocalRunConfig, DockerRunConfig, KubernetesRunConfig, DaskRunConfig)


def assert_round_trips(config: RunConfig) -> None:
    again = type(config).parse_raw(config.json())
    assert type(again) is type(config)
    assert again == config
    assert again.dict() == config.dict()


class TestValidConfigsAreAccepted:
    @given(config=rs.run_configs())
    def test_any_kind_round_trips_through_json(self, config: RunConfig) -> None:
        assert_round_trips(config)

    @given(kwargs=rs.local_run_config_kwargs(st.none() | st.sampled_from(["/", ".", "/tmp"]) | rs.working_dirs()))
    def test_local(self, kwargs: Dict[str, Any]) -> None:
        config = LocalRunConfig(**kwargs)
        assert config.labels == kwargs.get("labels", ["lume-services"])
        assert config.env == kwargs.get("env")
        if kwargs.get("working_dir") is not None:
            assert config.working_dir == os.path.abspath(kwargs["working_dir"])
        assert_round_trips(config)

    @given(kwargs=rs.docker_run_config_kwargs())
    def test_docker_keeps_every_field_as_given(self, kwargs: Dict[str, Any]) -> None:
        config = DockerRunConfig(**kwargs)
        for field, value in kwargs.items():
            assert getattr(config, field) == value, field
        assert_round_trips(config)

    @given(data=st.data())
    def test_kubernetes_keeps_every_field_as_given(self, job_template_file: Path, data: st.DataObject) -> None:
        # job_template_file is module-scoped and never changed: safe under @given.
        kwargs = data.draw(rs.kubernetes_run_config_kwargs(st.just(str(job_template_file))), label="kwargs")
        config = KubernetesRunConfig(**kwargs)
        for field, value in kwargs.items():
            assert getattr(config, field) == value, field
            assert type(getattr(config, field)) is type(value), field
        assert_round_trips(config)



class TestStrategiesAreDocumented:
    def test_every_public_strategy_has_a_docstring(self) -> None:
        for name in rs.__all__:
            value = getattr(rs, name)
            if callable(value):
                assert (value.__doc__ or "").strip(), f"{name} has no docstring"


class TestOneBrokenRuleIsReported:
    @given(case=rs.invalid_run_config_kwargs())
    def test_rejected_at_the_broken_field(self, case: Tuple[type, Dict[str, Any], str]) -> None:
        model, kwargs, broken_field = case
        try:
            model(**kwargs)
        except ValidationError as error:
            locations = [str(item["loc"][0]) for item in error.errors()]
            assert broken_field in locations, (broken_field, error.errors())
        else:
            raise AssertionError(f"{model.__name__}({kwargs!r}) was accepted; {broken_field} is broken")


def junk() -> st.SearchStrategy[Any]:
    """Anything a caller might pass by mistake, including known trouble makers."""
    trouble = st.sampled_from(
        [
            "infk",
            "1e99999999999",
            "1e-99999999999",
            # (Deeply nested YAML takes a second per parse: see TestJobTemplate.)
            "[[[[{a: [1, {b: 2}]}]]]]",
            "!!python/object/apply:os.system ['true']",
            "s3://bucket/key",
            "http://x/y",
            "/",
            ".",
            "\x00",
            "nan",
            float("nan"),
            float("inf"),
            -0.0,
            2**64,
            b"\xff",
            object(),
            type,
            {1: 2},
            {"shm_size": "infk"},
            {"mem_limit": 10**30},
            {"port_bindings": {"x": object()}},
            {"nano_cpus": 2**70},
            {"log_config": {"type": "json-file", "config": {"a": [[[[[]]]]]}}},
        ]
    )
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=12),
        st.binary(max_size=6),
        st.decimals(allow_nan=True),
        trouble,
    )
    # Built when drawn: Hypothesis cannot repr an int of more than 4300 digits.
    huge = st.just(5000).map(lambda digits: 10**digits)
    return st.recursive(
        scalars | huge,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.tuples(children),
            st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.none()), children, max_size=3),
            st.frozensets(st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
        ),
        max_leaves=6,
    )


def _fields(model: type) -> list[str]:
    return sorted(model.__fields__) + ["no_such_field"]


class TestOnlyValidationErrorEscapes:
    @given(data=st.data())
    def test_junk_in_any_field(self, data: st.DataObject) -> None:
        model = data.draw(st.sampled_from(MODELS), label="model")
        kwargs = data.draw(st.dictionaries(st.sampled_from(_fields(model)), junk(), max_size=4), label="kwargs")
        try:
            config = model(**kwargs)
        except ValidationError:
            return
        # Accepted junk must still make a config that can be shown and sent on.
        repr(config)
        config.dict()

    @given(data=st.data())
    def test_junk_in_one_field_of_a_valid_config_built_or_assigned(self, data: st.DataObject) -> None:
        config = data.draw(rs.run_configs(), label="config")
        model = type(config)
        field = data.draw(st.sampled_from(_fields(model)), label="field")
        value = data.draw(junk(), label="junk")
        try:
            model(**{**config.dict(exclude_unset=True), field: value})
        except ValidationError:
            pass
        before = config.dict()
        try:
            setattr(config, field, value)
        except ValidationError:
            assert config.dict() == before
        except ValueError:
            # pydantic itself refuses to set an unknown attribute ("object has no
            # field"): that is attribute access, not construction.
            assert field == "no_such_field"
