"""The README's command-line chapter: its Python snippets run as written, and the
configuration files it shows are the ones in examples/configs/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "README.md"
CHAPTER = "cli"
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)


def chapter_text() -> str:
    """The README's command-line chapter, between its chapter markers."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"<!-- chapter: {CHAPTER} -->")
    return text[start : text.index(f"<!-- end chapter: {CHAPTER} -->", start)]


def blocks(language: str) -> List[str]:
    return [body for lang, body in BLOCK.findall(chapter_text()) if lang == language]


def shown_files() -> List[Tuple[str, str]]:
    """(path, block) for each 'examples/configs/x`:' followed by its code block."""
    text = chapter_text()
    pattern = re.compile(r"`(examples/configs/[\w.-]+)`:\n\n```\w*\n(.*?)```", re.DOTALL)
    return pattern.findall(text)


class TestSnippets:
    @pytest.mark.parametrize("index", range(len(blocks("python"))))
    def test_each_python_snippet_runs(self, index: int, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(ROOT)
        for name in [name for name in __import__("os").environ if name.startswith("LUME_SCHEDULING_")]:
            monkeypatch.delenv(name)
        exec(compile(blocks("python")[index], f"{DOC}:python[{index}]", "exec"), {"__name__": "snippet"})

    def test_every_settings_and_run_config_file_is_shown_as_it_is(self) -> None:
        shown = dict(shown_files())
        assert sorted(shown) == [
            "examples/configs/dask.toml",
            "examples/configs/docker.toml",
            "examples/configs/fake.yaml",
            "examples/configs/kubernetes.yaml",
            "examples/configs/local.toml",
        ]
        for path, block in shown.items():
            assert block in (ROOT / path).read_text(encoding="utf-8"), path
