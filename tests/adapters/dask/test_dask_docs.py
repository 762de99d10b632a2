"""The README's Dask chapter, run as written: the embedded cluster, a scheduler
joined by address (another process's backend finding the run), and the Slurm
example with dask-jobqueue's own SLURMCluster.

Slurm cannot run here, so the Slurm example gets stand-ins for ``sbatch`` and
``scancel`` on ``PATH``: ``sbatch`` runs the job script dask-jobqueue generated
(its ``#SBATCH`` lines are comments to a shell) in a new session on this
machine, and ``scancel`` stops that session. The workers are the ones the
script starts, with the script's ``--resources GPU=1``, so a run asking for a
GPU can only go to them.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from distributed import LocalCluster

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "README.md"
CHAPTER = "dask-backend"
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)
SLURM_ADDRESS = "tcp://scheduler.example.org:8786"
GONE_WITHIN = 60.0

def python_blocks() -> List[str]:
    """The Python blocks of the README's Dask chapter, in order."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"<!-- chapter: {CHAPTER} -->")
    chapter = text[start : text.index(f"<!-- end chapter: {CHAPTER} -->", start)]
    return [body for language, body in BLOCK.findall(chapter) if language == "python"]


def block_with(word: str) -> str:
    (block,) = [block for block in python_blocks() if word in block]
    return block


def run_block(code: str, name: str) -> None:
    exec(compile(code, f"{DOC}:{name}", "exec"), {"__name__": "snippet"})


@pytest.fixture
def from_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snippets import ``examples.hello_flow``, as from a checkout's root."""
    monkeypatch.syspath_prepend(str(ROOT))
    for name in [name for name in os.environ if name.startswith("LUME_SCHEDULING_")]:
        monkeypatch.delenv(name)


SQUARE_SUMS = {n: sum(k * k for k in range(1, n + 1)) for n in range(1, 21)}


@pytest.mark.usefixtures("from_repository_root")
class TestEmbeddedAndAddress:
    def test_the_embedded_cluster_example_prints_the_flows_results(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.chdir(ROOT)
        run_block(block_with("DaskBackend(n_workers=2)"), "embedded")
        lines = capsys.readouterr().out.splitlines()
        assert lines == ["30", str([SQUARE_SUMS[18], SQUARE_SUMS[19], SQUARE_SUMS[20]])]

    def test_the_address_example_is_followed_by_another_backend(
        self, dask_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.chdir(ROOT)
        code = block_with("publish_runs=True")
        assert code.count(f'"{SLURM_ADDRESS}"') == 2
        run_block(code.replace(SLURM_ADDRESS, dask_cluster.scheduler_address), "address")
        first, second = capsys.readouterr().out.splitlines()
        flow_run_id, state = first.split(" ", 1)
        assert state == "success" and len(flow_run_id) == 36, first
        assert second == str(SQUARE_SUMS[10])


STAND_IN_SBATCH = """#!/bin/sh
# Stand-in for Slurm's sbatch: run the job script on this machine in a session
# of its own (its process group id is the job id), and print Slurm's answer.
script=$(mktemp "{jobs}/job.XXXXXX")
cp "$1" "$script"
setsid bash "$script" >"$script.log" 2>&1 </dev/null &
echo "$!" >>"{jobs}/ids"
echo "Submitted batch job $!"
"""

STAND_IN_SCANCEL = """#!/bin/sh
# Stand-in for Slurm's scancel: stop each job's session.
for id in "$@"; do
    kill -TERM -- "-$id" 2>/dev/null
    echo "$id" >>"{jobs}/cancelled"
done
exit 0
"""


def _session_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def stand_in_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, Path]]:
    """``sbatch`` and ``scancel`` stand-ins first on PATH; every job they started
    is gone after the test (stopped by force, and the test failed, if not)."""
    jobs = tmp_path / "jobs"
    bin_dir = tmp_path / "bin"
    jobs.mkdir()
    bin_dir.mkdir()
    for name, text in (("sbatch", STAND_IN_SBATCH), ("scancel", STAND_IN_SCANCEL)):
        path = bin_dir / name
        path.write_text(text.format(jobs=jobs), encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield {"jobs": jobs}
    ids = jobs / "ids"
    left = []
    for pgid in [int(line) for line in ids.read_text().split()] if ids.exists() else []:
        deadline = time.monotonic() + GONE_WITHIN
        while _session_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _session_alive(pgid):
            left.append(pgid)
            os.killpg(pgid, signal.SIGKILL)
    assert not left, f"Slurm jobs still running after cluster.close(): {left}"


@pytest.mark.usefixtures("from_repository_root")
class TestSlurmExample:
    def test_the_slurm_example_runs_on_the_workers_of_its_job_script(
        self,
        stand_in_slurm: Dict[str, Path],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.chdir(tmp_path)
        run_block(block_with("SLURMCluster("), "slurm")
        assert capsys.readouterr().out.splitlines() == [str([SQUARE_SUMS[n] for n in range(1, 9)])]
        jobs = stand_in_slurm["jobs"]
        ids = (jobs / "ids").read_text().split()
        assert len(ids) == 2, "cluster.scale(jobs=2) submits two jobs"
        # cluster.close() cancelled both jobs.
        assert sorted((jobs / "cancelled").read_text().split()) == sorted(ids)
        scripts = [path for path in jobs.glob("job.*") if path.suffix != ".log"]
        for script in scripts:
            text = script.read_text()
            assert "#SBATCH -p milano" in text and "#SBATCH -A lcls:default" in text
            assert "#SBATCH --gpus=1" in text and "--resources GPU=1" in text
            assert "--nthreads 4" in text
