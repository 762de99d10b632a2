"""The README's example flow really runs on the local backend, as the docs show."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from lume_scheduling.adapters.local import LocalBackend

ROOT = Path(__file__).resolve().parents[3]


def _load_example():
    spec = importlib.util.spec_from_file_location("hello_flow_example", ROOT / "examples" / "hello_flow.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestExampleFlow:
    def test_the_example_flow_computes_its_result(self) -> None:
        example = _load_example()
        with LocalBackend(max_workers=1) as backend:
            result = backend.run_and_return({"name": "LUME", "n": 4}, flow=example.flow)
            assert result == {
                "greeting-1": "Hello, LUME!",
                "n": 4,
                "name": "LUME",
                "squares-1": [1, 4, 9, 16],
                "sum_of_squares-1": 30,
            }
            assert backend.run_and_return({"n": 10}, None, "sum_of_squares", flow=example.flow) == 385

    def test_the_docs_snippet_runs_and_prints_what_the_docs_say(self, capsys, monkeypatch) -> None:
        text = (ROOT / "README.md").read_text(encoding="utf-8")
        snippet = re.search(r"<!-- example start -->\n```python\n(.*?)```", text, re.S).group(1)
        printed = re.search(r"<!-- example output -->\n```\n(.*?)```", text, re.S).group(1)
        monkeypatch.chdir(ROOT)
        monkeypatch.syspath_prepend(str(ROOT))
        exec(compile(snippet, "README.md", "exec"), {"__name__": "__main__"})
        assert capsys.readouterr().out == printed
