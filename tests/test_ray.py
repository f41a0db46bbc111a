"""The Ray executor runs the same run function as Ray tasks; only the driver writes runs.jsonl.

Opt-in (`tox -e ray`, marker `ray`): it needs `pip install 'rnnreg[ray]'` and starts Ray on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_sweep import BASE, _ablate, _tiny_corpus, _write_csv
from test_sweep_faults import _attempts, _mark
from test_sweep_scheduler import FakeRuns, _corpus, _tasks

import rnnreg.sweep
from rnnreg.ablation import RunTask, build_plan, tasks_for
from rnnreg.cli import main
from rnnreg.data import Corpus
from rnnreg.sweep import RAY_RETRIES, RunStore, sweep

pytestmark = pytest.mark.ray  # deselected by default; `tox -e ray` installs Ray and runs them


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _strip(records: dict[str, dict]) -> dict[str, dict]:
    return {k: {f: v for f, v in r.items() if f not in ("wall_s", "seconds", "threads")} for k, r in records.items()}


def test_ray_tasks_give_the_same_records_as_the_local_executor(tmp_path: Path) -> None:
    corpus = _tiny_corpus()
    tasks = tasks_for(build_plan("none", BASE, [["a"], ["b", "train.lr=0.01"]], seeds=2), BASE, "fp")
    local = sweep(tasks, corpus, RunStore(tmp_path / "local"), workers=1, threads=1, progress=False)
    remote = sweep(tasks, corpus, RunStore(tmp_path / "ray"), executor="ray", workers=2, threads=1, progress=False)
    assert remote.ran == 6 and not remote.failed
    assert _strip(remote.records) == _strip(local.records)
    import ray

    assert not ray.is_initialized()  # the local instance it started is shut down again
    lines = (tmp_path / "ray" / "runs.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["key"] for line in lines) == sorted(remote.records)


class DiesInRay(FakeRuns):
    """FakeRuns' records from Ray workers; the first ``die[(variant, seed)]`` attempts of a run SIGKILL their worker."""

    def __init__(self, folder: Path, die: dict[tuple[str, int], int]) -> None:
        super().__init__()
        self.folder, self.die = folder, die

    def __call__(self, task: RunTask, corpus: Corpus) -> dict[str, Any]:
        attempt = _mark(self.folder, f"{task.variant}-{task.seed}")
        if attempt <= self.die.get((task.variant, task.seed), 0):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(task, corpus)


def test_a_ray_worker_killed_mid_run_is_rerun_by_ray_then_recorded_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = str(Path(__file__).parent)  # Ray's workers import the stand-in from here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    marks = tmp_path / "marks"
    marks.mkdir()
    tasks = _tasks([["once"], ["always", "train.lr=0.01"], ["never", "train.lr=0.02"]], seeds=1, linear=False)
    monkeypatch.setattr(rnnreg.sweep, "run_task", DiesInRay(marks, die={("once", 0): 1, ("always", 0): 99}))
    store = RunStore(tmp_path / "out")
    result = sweep(tasks, _corpus(), store, executor="ray", workers=2, threads=1, progress=False)

    assert {r["variant"]: r["status"] for r in result.records.values()} == {
        "once": "ok",  # its worker died once; Ray ran it again
        "always": "failed",
        "never": "ok",
    }
    assert (_attempts(marks, "once-0"), _attempts(marks, "always-0"), _attempts(marks, "never-0")) == (
        2,
        1 + RAY_RETRIES,
        1,
    )
    (failed,) = result.failed
    assert failed["error"].startswith("worker crashed: ") and "\n" not in failed["error"], failed["error"]
    assert len(store.path.read_text().splitlines()) == 3  # one record per run

    monkeypatch.setattr(rnnreg.sweep, "run_task", FakeRuns())  # the next sweep retries exactly the failed run
    again = sweep(tasks, _corpus(), store, workers=1, threads=1, progress=False)
    assert (again.ran, again.reused, again.failed) == (1, 2, [])


@pytest.fixture
def cluster() -> Iterator[str]:
    """A one-node Ray cluster started with `ray start --head` on loopback, stopped afterwards."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray_cli is not None, "the ray extra installs the `ray` command next to python"
    port = _free_port()
    start = [ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2"]
    start += ["--include-dashboard=false", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], check=False, capture_output=True, timeout=120)


def test_ablate_runs_on_an_existing_cluster_and_resumes(
    tmp_path: Path, cluster: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_csv(tmp_path / "reviews.csv", n=40)
    out = tmp_path / "out"
    argv = _ablate(data, out, "--seeds", "2", "--preset", "none", "--variant", "a", "--variant", "b", "train.lr=0.02")
    argv[argv.index("--workers") + 1] = "2"  # two Ray tasks at a time, one thread each
    assert main([*argv, "--executor", "ray", "--address", cluster]) == 0
    assert "6 run(s) trained now, 0 reused" in capsys.readouterr().out
    assert len((out / "runs.jsonl").read_text().splitlines()) == 6
    assert main([*argv, "--executor", "ray", "--address", cluster]) == 0
    assert "0 run(s) trained now, 6 reused" in capsys.readouterr().out


def test_an_address_where_nothing_listens_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_csv(tmp_path / "reviews.csv", n=24)
    address = f"127.0.0.1:{_free_port()}"
    assert main(_ablate(data, tmp_path / "out", "--executor", "ray", "--address", address)) == 2
    err = capsys.readouterr().err
    assert "no Ray cluster answers at" in err and address in err and err.count("\n") == 1


@pytest.mark.parametrize("address", ["nonsense", "host:port", ":6379"])
def test_a_malformed_address_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], address: str) -> None:
    data = _write_csv(tmp_path / "reviews.csv", n=24)
    assert main(_ablate(data, tmp_path / "out", "--executor", "ray", "--address", address)) == 2
    assert "address must be host:port of a Ray head node" in capsys.readouterr().err
