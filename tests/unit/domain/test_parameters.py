"""The flow parameter rule every backend applies before it creates a run."""

from __future__ import annotations

from typing import Dict, List

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lume_scheduling.domain import FlowParameter, FlowParameterError, check_flow_parameters

NAMES = st.sampled_from(["a", "b", "c", "d", "x", "y"])


@st.composite
def declarations(draw: st.DrawFn) -> List[FlowParameter]:
    names = draw(st.lists(NAMES, unique=True, max_size=4))
    return [
        FlowParameter(name, required=required, default=None if required else draw(st.integers()))
        for name in names
        for required in [draw(st.booleans())]
    ]


class TestTheRule:
    @given(declared=declarations(), given_names=st.lists(NAMES, unique=True), elsewhere=st.lists(NAMES))
    def test_refused_exactly_when_a_name_is_unknown_or_a_required_one_missing(
        self, declared: List[FlowParameter], given_names: List[str], elsewhere: List[str]
    ) -> None:
        given_values: Dict[str, int] = {name: 1 for name in given_names}
        names = {p.name for p in declared}
        unknown = sorted(set(given_names) - names)
        missing = sorted(p.name for p in declared if p.required and p.name not in given_values and p.name not in elsewhere)
        if not unknown and not missing:
            check_flow_parameters("f", declared, given_values, supplied_elsewhere=elsewhere)
            return
        with pytest.raises(FlowParameterError) as raised:
            check_flow_parameters("f", declared, given_values, supplied_elsewhere=elsewhere)
        error = raised.value
        assert isinstance(error, ValueError)
        assert (list(error.unknown), list(error.missing)) == (unknown, missing)
        assert [p.name for p in error.parameters] == sorted(names)
        for name in unknown + missing:
            assert repr(name) in str(error)
        for parameter in declared:
            assert parameter.describe() in str(error)

    def test_a_flow_without_parameters_says_so(self) -> None:
        with pytest.raises(FlowParameterError, match=r"^flow 'empty' has no parameter 'x'; it takes no parameters$"):
            check_flow_parameters("empty", [], {"x": 1})

    def test_long_defaults_are_shortened_in_the_message(self) -> None:
        described = FlowParameter("data", default=list(range(100))).describe()
        assert described.startswith("data (default [0, 1, 2") and described.endswith("...)")
        assert len(described) < 60
