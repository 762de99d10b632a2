"""The command line's pieces, in this process: parameters, JSON output, flow loading,
run config files, the exit code table, and the commands on the in-memory fake.

The installed console script itself is driven in ``tests/e2e``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import cloudpickle
import pytest
from pydantic import ValidationError

from lume_scheduling.adapters import cli
from lume_scheduling.adapters.settings import SettingsError
from lume_scheduling.adapters.testing import flows
from lume_scheduling.domain import (
    BackendUnavailableError,
    EmptyResultError,
    FlowFailedError,
    FlowNotFoundError,
    FlowRunCancelledError,
    FlowRunNotFoundError,
    FlowRunTimeoutError,
    LocalBackendError,
    LocalRunConfig,
    TaskNotCompletedError,
    TaskNotInFlowError,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "configs"
FLOWS = "lume_scheduling.adapters.testing.flows"

FLOW_FILE = '''
from prefect import Flow, Parameter, task

@task(name="greet")
def greet(name):
    return f"hello {name}"

with Flow("greeting") as flow:
    greet(Parameter("name", default="world"))

other = flow
not_a_flow = 42
'''


@pytest.fixture
def flow_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "greeting.py"
    path.write_text(FLOW_FILE, encoding="utf-8")
    before = set(sys.modules)
    yield path
    # Loading a file registers a module; keep the test process as it was.
    for name in set(sys.modules) - before:
        if name.startswith("_lume_scheduling_flow_"):
            cloudpickle.unregister_pickle_by_value(sys.modules.pop(name))


def invoke(argv: List[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Tuple[int, str, str]:
    """Run the console script's ``main`` here: (exit code, stdout, stderr)."""
    for name in [name for name in list(__import__("os").environ) if name.startswith("LUME_SCHEDULING_")]:
        monkeypatch.delenv(name)
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


class TestParameters:
    def test_values_are_json_when_they_parse_else_text(self) -> None:
        parameters = cli.parse_parameters(
            ["n=3", "x=1.5", "ok=true", "none=null", "items=[1, 2]", "name=world", "quoted=\"7\"", "eq=a=b", "empty="]
        )
        assert parameters == {
            "n": 3, "x": 1.5, "ok": True, "none": None, "items": [1, 2],
            "name": "world", "quoted": "7", "eq": "a=b", "empty": "",
        }

    @pytest.mark.parametrize(
        "pairs, words",
        [(["x"], "must be written name=value"), (["=3"], "has no name"), (["x=1", "x=2"], "given twice")],
    )
    def test_a_malformed_parameter_is_a_usage_error_naming_the_option(self, pairs: List[str], words: str) -> None:
        with pytest.raises(cli.CliError, match=words) as caught:
            cli.parse_parameters(pairs)
        assert caught.value.exit_code == cli.EXIT_USAGE
        assert "-p/--param" in str(caught.value)


class TestJsonOutput:
    def test_json_values_pass_through_and_containers_are_converted(self) -> None:
        value = {"a": (1, 2), "b": {3, 1}, 4: None, None: [1.5, "x"], True: False}
        assert cli.jsonable(value) == {"a": [1, 2], "b": [1, 3], "4": None, "null": [1.5, "x"], "true": False}

    def test_what_json_cannot_hold_is_written_as_its_repr(self) -> None:
        assert cli.jsonable(float("nan")) == "nan"
        assert cli.jsonable(float("inf")) == "inf"
        assert cli.jsonable(timedelta(seconds=1)) == "datetime.timedelta(seconds=1)"
        assert cli.jsonable({(1, 2): b"x"}) == {"(1, 2)": "b'x'"}
        json.dumps(cli.jsonable({"v": [float("nan"), object()]}), allow_nan=False)


class TestFlowLoading:
    def test_a_module_attribute_is_loaded(self) -> None:
        assert cli.load_flow(f"{FLOWS}:twin_flow") is flows.twin_flow

    def test_a_file_without_an_attribute_gives_its_flow_attribute(self, flow_file: Path) -> None:
        flow = cli.load_flow(str(flow_file))
        assert flow.name == "greeting"
        assert cli.load_flow(f"{flow_file}:other").name == "greeting"

    def test_a_flow_from_a_file_is_pickled_by_value_for_worker_processes(self, flow_file: Path) -> None:
        flow = cli.load_flow(str(flow_file))
        payload = cloudpickle.dumps(flow)
        for name in [name for name in sys.modules if name.startswith("_lume_scheduling_flow_")]:
            cloudpickle.unregister_pickle_by_value(sys.modules.pop(name))
        # The module is gone, as it is in a worker: the flow still unpickles and runs.
        state = cloudpickle.loads(payload).run(name="pickle")
        assert state.is_successful()

    @pytest.mark.parametrize(
        "spec, words",
        [
            ("{file}:missing", "has no attribute 'missing'"),
            ("{file}:not_a_flow", "not_a_flow is a int, not a Prefect flow"),
            ("{dir}/absent.py", "is not a file"),
            ("no_such_module_for_lume:flow", "ModuleNotFoundError"),
            (f"{FLOWS}", "has no attribute 'flow'"),
        ],
    )
    def test_what_cannot_be_loaded_is_a_usage_error(self, flow_file: Path, spec: str, words: str) -> None:
        with pytest.raises(cli.CliError, match=words) as caught:
            cli.load_flow(spec.format(file=flow_file, dir=flow_file.parent))
        assert caught.value.exit_code == cli.EXIT_USAGE

    def test_a_file_that_raises_while_loading_is_a_usage_error(self, tmp_path: Path) -> None:
        broken = tmp_path / "broken.py"
        broken.write_text("raise RuntimeError('no database')\n", encoding="utf-8")
        with pytest.raises(cli.CliError, match="RuntimeError: no database"):
            cli.load_flow(str(broken))
        assert not [name for name in sys.modules if name.startswith("_lume_scheduling_flow_broken")]


class TestRunConfigFiles:
    @pytest.mark.parametrize("name, kind", [("run-local.yaml", "local"), ("run-docker.yaml", "docker"),
                                            ("run-kubernetes.json", "kubernetes")])
    def test_each_example_run_config_validates(self, name: str, kind: str) -> None:
        assert cli.read_run_config(str(EXAMPLES / name)).kind == kind

    def test_the_public_form_masks_env_values(self) -> None:
        config = LocalRunConfig(env={"TOKEN": "hunter2"})
        assert cli.public_run_config(config)["env"] == {"TOKEN": "**********"}
        assert config.env == {"TOKEN": "hunter2"}

    @pytest.mark.parametrize(
        "text, problems",
        [
            ("labels: [a]\n", [("kind", "field required: one of local, docker, kubernetes, dask")]),
            ("kind: cloud\n", [("kind", "'cloud' is unknown: use one of local, docker, kubernetes, dask")]),
            ("kind: docker\nports: [0]\ncolour: red\n", None),
        ],
    )
    def test_problems_name_their_field(self, tmp_path: Path, text: str, problems: Any) -> None:
        path = tmp_path / "run.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(SettingsError) as caught:
            cli.read_run_config(str(path))
        if problems is None:
            assert sorted(location for location, _ in caught.value.problems) == ["colour", "image", "ports"]
        else:
            assert caught.value.problems == problems


class TestExitCodes:
    @pytest.mark.parametrize(
        "error, code",
        [
            (SettingsError("settings", [("backend", "bad")]), cli.EXIT_USAGE),
            (cli.CliError("bad"), cli.EXIT_USAGE),
            (LocalBackendError("register_flow"), cli.EXIT_USAGE),
            (TaskNotInFlowError("f", None, "t"), cli.EXIT_USAGE),
            (ValueError("project_name must be a non-empty string"), cli.EXIT_USAGE),
            (FlowFailedError(flow_run_id="r"), cli.EXIT_FLOW_FAILED),
            (FlowRunCancelledError(flow_run_id="r"), cli.EXIT_FLOW_FAILED),
            (TaskNotCompletedError("t"), cli.EXIT_FLOW_FAILED),
            (EmptyResultError(), cli.EXIT_FLOW_FAILED),
            (FlowRunTimeoutError("r", timedelta(seconds=1), cancelled=True), cli.EXIT_TIMEOUT),
            (BackendUnavailableError("http://x", "refused"), cli.EXIT_UNAVAILABLE),
            (FlowNotFoundError(flow_id="f"), cli.EXIT_NOT_FOUND),
            (FlowRunNotFoundError("r"), cli.EXIT_NOT_FOUND),
            (KeyError("oops"), cli.EXIT_ERROR),
        ],
    )
    def test_each_error_has_its_exit_code_and_one_line(self, error: Exception, code: int) -> None:
        got, lines = cli.classify(error)
        assert got == code
        assert len(lines) == 1 and "\n" not in lines[0]

    def test_an_invalid_run_config_is_a_usage_error_per_field(self) -> None:
        with pytest.raises(ValidationError) as caught:
            LocalRunConfig(labels="a", colour=1)
        code, lines = cli.classify(caught.value)
        assert code == cli.EXIT_USAGE
        assert [line.split(":")[1].strip() for line in lines] == ["labels", "colour"]


class TestBackendLogs:
    def test_backend_log_lines_reach_stderr_and_quiet_keeps_only_warnings(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        logger = logging.getLogger("lume_scheduling.server")
        parent = logging.getLogger("lume_scheduling")
        handlers, level = list(parent.handlers), parent.level
        state = cli.CliState()
        with cli._backend_logs_to_stderr(state):
            logger.info("[flow run r] Beginning Flow run")
            state.quiet = True
            logger.info("[flow run r] hidden with --quiet")
            logger.warning("no agent polls for labels ['gpu']")
        logger.warning("after the command: not ours to show")
        err = capsys.readouterr().err
        assert err.splitlines()[:2] == [
            "lume-scheduling: [flow run r] Beginning Flow run",
            "lume-scheduling: no agent polls for labels ['gpu']",
        ]
        assert "hidden" not in err
        assert (parent.handlers, parent.level) == (handlers, level)


class TestCommandsOnTheFake:
    """The commands in this process, on the fake configured through the environment."""

    def test_run_prints_only_json_on_stdout_and_progress_on_stderr(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = invoke(
            ["--config", str(EXAMPLES / "fake.yaml"), "run", f"{FLOWS}:arithmetic_flow", "-p", "x=5", "--task", "add"],
            monkeypatch, capsys,
        )
        assert (code, json.loads(out)) == (0, 7)
        assert "submitted to the fake backend" in err and ": success" in err

    def test_quiet_leaves_stderr_without_progress(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = invoke(
            ["--config", str(EXAMPLES / "fake.yaml"), "--quiet", "run", f"{FLOWS}:twin_flow", "--task", "double"],
            monkeypatch, capsys,
        )
        assert (code, json.loads(out)) == (0, {"double-1": 6, "double-2": 12})
        assert "lume-scheduling:" not in err

    def test_a_run_config_file_goes_with_the_run(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        run_config = tmp_path / "run.yaml"
        run_config.write_text("kind: local\nlabels: [here]\nenv: {A: b}\n", encoding="utf-8")
        code, out, _ = invoke(
            ["--config", str(EXAMPLES / "fake.yaml"), "run", f"{FLOWS}:arithmetic_flow",
             "--run-config", str(run_config), "--task", "multiply", "-p", "x=3", "-p", "y=4"],
            monkeypatch, capsys,
        )
        assert (code, json.loads(out)) == (0, 12)

    def test_on_a_server_backend_run_registers_flow_into_project_first(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = invoke(
            ["--backend", "fake", "run", f"{FLOWS}:arithmetic_flow", "--project", "lume", "--task", "add_more"],
            monkeypatch, capsys,
        )
        assert (code, json.loads(out)) == (0, 13)
        assert "registered flow 'arithmetic' in project 'lume'" in err

    def test_on_a_server_backend_run_needs_a_flow_id_or_a_project(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = invoke(["--backend", "fake", "run", f"{FLOWS}:arithmetic_flow"], monkeypatch, capsys)
        assert (code, out) == (cli.EXIT_USAGE, "")
        assert err.strip() == (
            "lume-scheduling: error: a server backend runs registered flows: give --flow-id ID, "
            "or FLOW with --project P to register it first"
        )

    def test_an_unknown_flow_id_is_not_found(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, _, err = invoke(["--backend", "fake", "run", "--flow-id", "no-such-flow"], monkeypatch, capsys)
        assert code == cli.EXIT_NOT_FOUND, err

    def test_register_prints_a_flow_id_and_create_project_reports_on_stderr(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = invoke(["--backend", "fake", "create-project", "lume"], monkeypatch, capsys)
        assert (code, out) == (0, "")
        assert "project 'lume' is ready" in err
        # Each invocation has its own fake: the project must be made again to register.
        code, out, err = invoke(
            ["--backend", "fake", "register", f"{FLOWS}:arithmetic_flow", "--project", "elsewhere"],
            monkeypatch, capsys,
        )
        assert code == cli.EXIT_USAGE, err
        assert "elsewhere" in err

    @pytest.mark.parametrize("command", [["create-project", "p"], ["register", f"{FLOWS}:arithmetic_flow", "--project", "p"]])
    def test_project_commands_need_a_server(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: List[str]
    ) -> None:
        code, _, err = invoke(["--config", str(EXAMPLES / "fake.yaml"), *command], monkeypatch, capsys)
        assert code == cli.EXIT_USAGE
        assert "needs a server backend (--backend docker or kubernetes)" in err

    @pytest.mark.parametrize("command", [["submit", f"{FLOWS}:arithmetic_flow"], ["status", "r"],
                                         ["result", "r"], ["cancel", "r"]])
    def test_run_id_commands_need_a_server_backend_kind(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: List[str]
    ) -> None:
        code, out, err = invoke(["--backend", "fake", *command], monkeypatch, capsys)
        assert (code, out) == (cli.EXIT_USAGE, "")
        assert err.count("\n") == 1
        assert f"{command[0]} needs a server backend" in err and "live in the process that started them" in err
