"""`resolve_run_config`: keyword arguments meant for another kind of run config are
ignored with a warning (lume-services passes ``image=`` to every backend); keys no
run config knows are refused by name; a run config given whole stays strict."""

from __future__ import annotations

import warnings
from typing import Dict, List, Type

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lume_scheduling.application import resolve_run_config
from lume_scheduling.application.ports import foreign_run_config_fields
from lume_scheduling.domain import (
    RUN_CONFIG_TYPES,
    DaskRunConfig,
    DockerRunConfig,
    KubernetesRunConfig,
    LocalRunConfig,
    RunConfig,
)

KINDS: List[Type[RunConfig]] = [RunConfig, LocalRunConfig, DockerRunConfig, KubernetesRunConfig, DaskRunConfig]
EVERY_FIELD = sorted({name for model in RUN_CONFIG_TYPES.values() for name in model.__fields__})
# Values that would be invalid for the field they name: ignored means not even checked.
NONSENSE = st.one_of(st.integers(), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2))


def _resolve(model: Type[RunConfig], **kwargs: object) -> RunConfig:
    return resolve_run_config(model, None, kwargs, caller="run", backend="SomeBackend")


class TestForeignFields:
    def test_image_is_foreign_to_the_local_run_config_and_working_dir_to_docker(self) -> None:
        assert foreign_run_config_fields(LocalRunConfig, ["image", "env"]) == {
            "image": ["docker", "kubernetes"]
        }
        assert foreign_run_config_fields(DockerRunConfig, ["working_dir", "image"]) == {
            "working_dir": ["dask", "local"]
        }
        assert foreign_run_config_fields(LocalRunConfig, ["resources", "working_dir"]) == {
            "resources": ["dask"]
        }
        assert foreign_run_config_fields(DaskRunConfig, ["image", "working_dir"]) == {
            "image": ["docker", "kubernetes"]
        }
        assert foreign_run_config_fields(KubernetesRunConfig, ["ports", "job_template"]) == {
            "ports": ["docker"]
        }
        assert foreign_run_config_fields(LocalRunConfig, ["no_such_key"]) == {}

    def test_a_subclass_of_a_kind_has_no_field_foreign_to_that_kind(self) -> None:
        class SiteLocalRunConfig(LocalRunConfig):
            partition: str = "shared"

        assert foreign_run_config_fields(SiteLocalRunConfig, ["working_dir", "image"]) == {
            "image": ["docker", "kubernetes"]
        }

    @given(
        model=st.sampled_from(KINDS),
        data=st.data(),
    )
    def test_foreign_fields_are_left_out_with_one_warning_naming_them(
        self, model: Type[RunConfig], data: st.DataObject
    ) -> None:
        foreign = sorted(set(EVERY_FIELD) - set(model.__fields__))
        chosen = data.draw(st.lists(st.sampled_from(foreign), unique=True, min_size=1, max_size=3)) if foreign else []
        kwargs: Dict[str, object] = {name: data.draw(NONSENSE) for name in chosen}
        if model is DockerRunConfig:
            kwargs["image"] = "python:3.11"
        kwargs["labels"] = ["site"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            built = _resolve(model, **kwargs)
        assert type(built) is model
        assert built.labels == ["site"]
        if not chosen:
            assert caught == []
            return
        (warning,) = caught
        assert issubclass(warning.category, UserWarning)
        message = str(warning.message)
        assert "SomeBackend.run() ignores" in message
        assert model.__name__ in message
        for name in chosen:
            assert name in message
            assert name not in built.__fields_set__

    @given(
        model=st.sampled_from(KINDS),
        unknown=st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True).filter(lambda n: n not in EVERY_FIELD),
    )
    def test_a_key_no_run_config_knows_is_refused_by_name_and_nothing_warns(
        self, model: Type[RunConfig], unknown: str
    ) -> None:
        kwargs: Dict[str, object] = {unknown: 1, "image": "python:3.11", "working_dir": None}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(pydantic.ValidationError) as raised:
                _resolve(model, **kwargs)
        assert unknown in str(raised.value)
        assert [str(w.message) for w in caught] == []

    def test_an_own_field_that_is_invalid_is_still_refused(self) -> None:
        with pytest.raises(pydantic.ValidationError, match="image"):
            _resolve(DockerRunConfig, image="Not A Valid Image", working_dir="/tmp")


class TestRunConfigGivenWhole:
    def test_a_mapping_with_another_kinds_field_is_refused(self) -> None:
        with pytest.raises(pydantic.ValidationError, match="image"):
            resolve_run_config(LocalRunConfig, {"image": "python:3.11"}, {})

    def test_a_run_config_of_another_kind_is_refused_where_it_does_not_fit(self) -> None:
        with pytest.raises(pydantic.ValidationError, match="image"):
            resolve_run_config(LocalRunConfig, DockerRunConfig(image="python:3.11"), {})

    @pytest.mark.parametrize("given_as", ["docker", 3, ["labels"], b"env"])
    def test_anything_else_is_a_type_error_naming_run_config(self, given_as: object) -> None:
        with pytest.raises(TypeError, match="run_config must be a LocalRunConfig"):
            resolve_run_config(LocalRunConfig, given_as, {})  # type: ignore[arg-type]
