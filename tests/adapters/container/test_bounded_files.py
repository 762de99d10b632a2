"""Settings files and run config files are read within bounds: alias bombs, deep
nesting and oversized files get one line naming the file; YAML errors in a job
template say where, never what."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lume_scheduling.adapters import cli
from lume_scheduling.adapters.settings import SettingsError, load_settings
from lume_scheduling.domain import KubernetesRunConfig
from lume_scheduling.domain.documents import MAX_DEPTH, MAX_DOCUMENT_CHARS, MAX_NODES

SECRET = "token-inside-a-template-42"
DEEP = 100_000


def bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def deep_text(suffix: str) -> str:
    if suffix == ".toml":
        return "a = " + "[" * DEEP + "]" * DEEP + "\n"
    return "{\"a\": " + "[" * DEEP + "]" * DEEP + "}"  # JSON, and YAML's flow style


def one_problem(err: SettingsError, source: str) -> str:
    (line,) = err.lines()
    assert line.startswith(source), line
    return line


class TestSettingsFiles:
    def test_an_alias_bomb_is_refused_naming_the_file(self, tmp_path: Path) -> None:
        file = tmp_path / "settings.yaml"
        file.write_text("backend: local\nlocal:\n  labels_bomb:\n" + "".join(f"    {l}\n" for l in bomb().splitlines()))
        with pytest.raises(SettingsError) as raised:
            load_settings(file, environ={})
        line = one_problem(raised.value, f"settings file {str(file)!r}")
        assert f"more than {MAX_NODES} nodes once its aliases are expanded" in line

    @pytest.mark.parametrize("suffix", [".yaml", ".json", ".toml"])
    def test_deep_nesting_is_refused_naming_the_file(self, tmp_path: Path, suffix: str) -> None:
        file = tmp_path / f"settings{suffix}"
        file.write_text(deep_text(suffix))
        with pytest.raises(SettingsError) as raised:
            load_settings(file, environ={})
        line = one_problem(raised.value, f"settings file {str(file)!r}")
        assert f"is nested more than {MAX_DEPTH} levels deep" in line

    def test_a_file_larger_than_the_limit_is_refused_without_reading_it_all(self, tmp_path: Path) -> None:
        file = tmp_path / "settings.json"
        file.write_text(json.dumps({"backend": "local", "pad": "x" * (10 * MAX_DOCUMENT_CHARS)}))
        with pytest.raises(SettingsError) as raised:
            load_settings(file, environ={})
        assert f"is larger than {MAX_DOCUMENT_CHARS} characters" in one_problem(raised.value, "settings file")


class TestRunConfigFiles:
    @pytest.mark.parametrize("suffix", [".yaml", ".json"])
    def test_deep_nesting_is_refused_naming_the_file(self, tmp_path: Path, suffix: str) -> None:
        file = tmp_path / f"run{suffix}"
        file.write_text('{"kind": "local", "labels": ' + "[" * DEEP + "]" * DEEP + "}")
        with pytest.raises(SettingsError) as raised:
            cli.read_run_config(str(file))
        assert "is nested more than" in one_problem(raised.value, f"run config {str(file)!r}")

    def test_an_alias_bomb_is_refused_naming_the_file(self, tmp_path: Path) -> None:
        file = tmp_path / "run.yaml"
        file.write_text("kind: local\n" + bomb())
        with pytest.raises(SettingsError) as raised:
            cli.read_run_config(str(file))
        assert "nodes once its aliases are expanded" in one_problem(raised.value, f"run config {str(file)!r}")

    def test_a_yaml_error_in_a_job_template_is_one_line_without_its_content(self, tmp_path: Path) -> None:
        template = f"apiVersion: batch/v1\nkind: Job\nspec:\n  env: [{{name: TOKEN, value: {SECRET}}}\n  broken: [\n"
        file = tmp_path / "run.yaml"
        file.write_text("kind: kubernetes\njob_template: |\n" + "".join(f"  {line}\n" for line in template.splitlines()))
        with pytest.raises(SettingsError) as raised:
            cli.read_run_config(str(file))
        line = one_problem(raised.value, f"run config {str(file)!r}")
        assert line.startswith(f"run config {str(file)!r}: job_template: job_template is not valid YAML: ")
        assert "(line " in line and ", column " in line
        assert SECRET not in line and "TOKEN" not in line


class TestJobTemplates:
    def test_a_template_text_or_file_beyond_the_limits_is_a_validation_error(self, tmp_path: Path) -> None:
        with pytest.raises(ValidationError, match="job_template has more than"):
            KubernetesRunConfig(job_template=bomb())
        deep = tmp_path / "job.yaml"
        deep.write_text("a: " + "[" * DEEP + "]" * DEEP + "\n")
        with pytest.raises(ValidationError, match="job_template_path .* is nested more than"):
            KubernetesRunConfig(job_template_path=str(deep))
        broken = tmp_path / "broken.yaml"
        broken.write_text(f"token: \"{SECRET}\n")
        with pytest.raises(ValidationError) as raised:
            KubernetesRunConfig(job_template_path=str(broken))
        assert SECRET not in str(raised.value) and "is not valid YAML" in str(raised.value)
