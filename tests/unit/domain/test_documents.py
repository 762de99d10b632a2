"""Bounded reading of YAML and JSON documents: alias bombs, deep nesting, size,
and errors that never quote the document."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from lume_scheduling.domain import documents
from lume_scheduling.domain.documents import (
    MAX_DEPTH,
    MAX_DOCUMENT_CHARS,
    MAX_NODES,
    DocumentError,
    check_depth,
    load_yaml,
)

SECRET = "token-in-a-template-0123"


def billion_laughs(levels: int, width: int = 10) -> str:
    """``levels`` anchors, each a list of ``width`` aliases of the previous one:
    a few hundred bytes that expand to ``width ** levels`` nodes."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each YAML loader in turn (PyYAML may be installed without libyaml)."""
    if request.param == "pure-python":
        monkeypatch.setattr(documents, "_FAST_LOADER", None)
    elif documents._FAST_LOADER is None:
        pytest.skip("PyYAML was built without libyaml")
    return str(request.param)


JSON_DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=20,
)


class TestWithinTheLimits:
    @given(data=JSON_DATA)
    def test_plain_documents_read_as_the_safe_loader_reads_them(self, data: Any) -> None:
        text = yaml.safe_dump(data)
        assert load_yaml(text) == yaml.safe_load(text)

    def test_aliases_and_merge_keys_within_the_limit_are_expanded(self, loader: str) -> None:
        assert load_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n") == {"base": {"x": 1}, "other": {"x": 1, "y": 2}}
        assert len(load_yaml(billion_laughs(4))["a3"]) == 10  # 10 ** 4 nodes: fine

    def test_nesting_up_to_the_limit_is_fine(self, loader: str) -> None:
        load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH)
        check_depth(load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH))


class TestBeyondTheLimits:
    def test_an_alias_bomb_is_refused_before_it_is_built(self, loader: str) -> None:
        tracemalloc.start()
        try:
            with pytest.raises(DocumentError, match=f"more than {MAX_NODES} nodes once its aliases are expanded"):
                load_yaml(billion_laughs(9))  # 10 ** 9 nodes from 600 bytes
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 20 * 2**20, f"{peak} bytes were used to refuse it"

    def test_a_recursive_alias_is_refused(self, loader: str) -> None:
        with pytest.raises(DocumentError, match="refers to a node containing it"):
            load_yaml("a: &x [1, *x]\n")

    @pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
    def test_deep_nesting_is_refused_with_its_position(self, loader: str, depth: int) -> None:
        text = "[" * depth + "]" * depth
        with pytest.raises(DocumentError, match=rf"^is nested more than {MAX_DEPTH} levels deep \(line 1, column \d+\)$"):
            load_yaml(text)

    def test_deep_data_from_another_parser_is_refused(self) -> None:
        data: Any = 1
        for _ in range(MAX_DEPTH + 1):
            data = [data]
        with pytest.raises(DocumentError, match="nested more than"):
            check_depth(data)

    def test_a_document_larger_than_the_limit_is_refused(self) -> None:
        with pytest.raises(DocumentError, match=f"larger than {MAX_DOCUMENT_CHARS} characters"):
            load_yaml("a: " + "x" * MAX_DOCUMENT_CHARS)


class TestErrors:
    @pytest.mark.parametrize(
        "text",
        [
            f"spec:\n  containers:\n    - env: [{{name: T, value: {SECRET}}}\n  bad: [\n",
            f'token: "{SECRET}\n',
            f"a: {SECRET}\n  b: c: d\n",
            f"token: {SECRET}\n\tindent: tab\n",
        ],
    )
    def test_a_syntax_error_is_one_line_with_its_position_and_no_content(self, loader: str, text: str) -> None:
        with pytest.raises(DocumentError) as raised:
            load_yaml(text)
        message = str(raised.value)
        assert "\n" not in message and SECRET not in message
        assert raised.value.syntax and raised.value.line is not None and f"(line {raised.value.line}, column" in message
        # Not even in the context a traceback would show.
        assert raised.value.__context__ is None and raised.value.__cause__ is None

    def test_a_python_tag_is_refused_never_run(self, loader: str) -> None:
        with pytest.raises(DocumentError, match="could not determine a constructor"):
            load_yaml("!!python/object/apply:os.system ['false']")
