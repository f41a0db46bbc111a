"""A worker process that dies (the out-of-memory killer's SIGKILL, an exit mid-run) costs its own run, nothing more.

The stand-in run function (:class:`Scripted`) is set on ``rnnreg.sweep.run_task``; the process executor hands it to its
spawned workers, where a scripted run kills its own worker. Runs coordinate through marker files in a folder, never
through sleeps: a run marked ``hold`` waits, on its first attempt, until the pool stops it, and a run marked to die
waits until every ``hold`` run has started, so the death always lands while a healthy run is in flight.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_sweep import _ablate, _write_csv
from test_sweep_scheduler import FakeRuns, _corpus, _tasks

import rnnreg.sweep
from rnnreg.ablation import RunTask
from rnnreg.cli import main
from rnnreg.data import Corpus
from rnnreg.sweep import MAX_BREAKS, RunStore, sweep

PATIENCE_S = 180.0  # how long a scripted run waits for the other; generous, for a loaded 2-core machine


class Scripted(FakeRuns):
    """FakeRuns' records from spawned workers, with scripted deaths.

    ``die`` maps (variant, seed) to how that run ends its worker: "kill" (SIGKILL to itself) or "exit" (exit code 3).
    ``hold`` runs wait on their first attempt until the pool stops them. Every attempt leaves a file
    ``<variant>-<seed>.<attempt>`` in ``folder``.
    """

    def __init__(self, folder: Path, die: dict[tuple[str, int], str], hold: set[tuple[str, int]]) -> None:
        super().__init__()
        self.folder, self.die, self.hold = folder, die, hold

    def __call__(self, task: RunTask, corpus: Corpus) -> dict[str, Any]:
        run = (task.variant, task.seed)
        attempt = _mark(self.folder, f"{task.variant}-{task.seed}")
        if run in self.hold and attempt == 1:
            _wait_for(lambda: False)  # the pool stops this worker when the other one dies
        if run in self.die:
            _wait_for(lambda: all(_attempts(self.folder, f"{v}-{s}") for v, s in self.hold))
            if self.die[run] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(3)
        return super().__call__(task, corpus)


def _mark(folder: Path, name: str) -> int:
    """Leave the next attempt's file for the run ``name``; returns the attempt's number (1 for the first)."""
    for attempt in range(1, 100):
        try:
            os.close(os.open(folder / f"{name}.{attempt}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return attempt
        except FileExistsError:
            continue
    raise RuntimeError(f"{name}: too many attempts")


def _attempts(folder: Path, name: str) -> int:
    return len(list(folder.glob(f"{name}.*")))


def _wait_for(condition: Any) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def _lines(store: RunStore) -> list[dict[str, Any]]:
    return [json.loads(line) for line in store.path.read_text().splitlines()]


def _by_run(records: list[dict[str, Any]]) -> Counter[tuple[str, int, str]]:
    return Counter((r["variant"], r["seed"], r["status"]) for r in records)


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    folder = tmp_path / "marks"
    folder.mkdir()
    return folder


def test_a_sigkilled_worker_fails_only_its_run_and_the_sweep_goes_on(
    tmp_path: Path, marks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = _tasks([["a"], ["boom", "train.lr=0.01"]], seeds=2, linear=False)  # a0, boom0, a1, boom1
    monkeypatch.setattr(rnnreg.sweep, "run_task", Scripted(marks, die={("boom", 0): "kill"}, hold={("a", 0)}))
    store = RunStore(tmp_path / "out")
    result = sweep(tasks, _corpus(), store, workers=2, threads=1, progress=False)

    assert [(r["variant"], r["seed"]) for r in result.failed] == [("boom", 0)]
    assert "signal 9 (SIGKILL)" in result.failed[0]["error"] and "out of memory?" in result.failed[0]["error"]
    # Every other run is recorded ok exactly once; the run in flight beside the dead one is not recorded failed.
    assert _by_run(_lines(store)) == Counter(
        {("a", 0, "ok"): 1, ("a", 1, "ok"): 1, ("boom", 1, "ok"): 1, ("boom", 0, "failed"): 1}
    )
    assert _attempts(marks, "a-0") == 2  # it was in flight when the pool broke, and ran again in the next one
    assert _attempts(marks, "boom-0") == 1  # the run that killed its worker is not retried within the sweep

    # The same sweep again trains exactly the failed run.
    fake = FakeRuns()
    monkeypatch.setattr(rnnreg.sweep, "run_task", fake)
    again = sweep(tasks, _corpus(), store, workers=1, threads=1, progress=False)
    assert [(t.variant, t.seed) for t in fake.calls] == [("boom", 0)]
    assert (again.ran, again.reused, again.failed) == (1, 3, [])


def test_workers_that_keep_dying_end_the_sweep_with_every_run_recorded_failed(
    tmp_path: Path, marks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = _tasks([["a"], ["b", "train.lr=0.01"], ["c", "train.lr=0.02"], ["d", "train.lr=0.03"]], 2, linear=False)
    die = {(t.variant, t.seed): ("kill" if i % 2 else "exit") for i, t in enumerate(tasks)}  # every run dies
    monkeypatch.setattr(rnnreg.sweep, "run_task", Scripted(marks, die=die, hold=set()))
    store = RunStore(tmp_path / "out")
    result = sweep(tasks, _corpus(), store, workers=2, threads=1, progress=False)

    lines = _lines(store)
    assert sorted((r["variant"], r["seed"]) for r in lines) == sorted(die)  # each run recorded once, all failed
    assert all(r["status"] == "failed" for r in lines) and len(result.failed) == len(tasks)
    given_up = [
        r for r in lines if r["error"].startswith(f"not run: worker processes died {MAX_BREAKS} times in a row")
    ]
    died = [r for r in lines if r not in given_up]
    for r in died:  # a run whose worker died says how
        how = die[(r["variant"], r["seed"])]
        assert r["error"].startswith(
            "worker process killed by signal 9 (SIGKILL)" if how == "kill" else "worker process exited with code 3"
        ), r
        assert _attempts(marks, f"{r['variant']}-{r['seed']}") == 1  # and was not retried within the sweep
    # Each break costs at least one run and at most one per worker; it stopped rebuilding after MAX_BREAKS.
    assert MAX_BREAKS <= len(died) <= 2 * MAX_BREAKS and len(given_up) == len(tasks) - len(died)


def test_ablate_with_a_worker_killed_exits_1_without_a_traceback_and_the_rerun_trains_only_that_run(
    tmp_path: Path, marks: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_csv(tmp_path / "reviews.csv", n=40)
    out = tmp_path / "out"
    argv = _ablate(
        data, out, "--seeds", "2", "--preset", "none", "--variant", "a", "--variant", "boom", "train.lr=0.02"
    )
    argv[argv.index("--workers") + 1] = "2"
    monkeypatch.setattr(rnnreg.sweep, "run_task", Scripted(marks, die={("boom", 1): "kill"}, hold={("a", 1)}))
    assert main(argv) == 1
    printed, err = capsys.readouterr()
    assert "Traceback" not in printed + err
    assert "(1 failed)" in printed  # the table counts it
    failed = [line for line in err.splitlines() if line.startswith("run failed: ")]
    assert failed == [
        "run failed: boom, seed 1: worker process killed by signal 9 (SIGKILL) - out of memory? "
        "(the kernel's OOM killer sends SIGKILL)"
    ], err
    assert "rnnreg: 1 run(s) failed; the same command retries them" in err
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert _by_run(records)[("boom", 1, "failed")] == 1 and len(records) == 6  # 2 seeds x (a, boom, linear)
    assert "signal 9 (SIGKILL)" in next(r["error"] for r in records if r["status"] == "failed")

    monkeypatch.setattr(rnnreg.sweep, "run_task", FakeRuns())
    assert main(argv) == 0
    assert "1 run(s) trained now, 5 reused" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("exitcode", "cause"),
    [
        (-9, "worker process killed by signal 9 (SIGKILL) - out of memory?"),
        (-11, "worker process killed by signal 11 (SIGSEGV)"),
        (3, "worker process exited with code 3 mid-run"),
        (0, "worker process exited with code 0 mid-run"),
        (-15, None),  # the pool stops its healthy workers with SIGTERM when one dies
        (None, None),  # still running
    ],
)
def test_a_dead_workers_cause_is_its_signal_or_exit_code(exitcode: int | None, cause: str | None) -> None:
    said = rnnreg.sweep._death(exitcode)
    assert said == cause if cause is None else (said or "").startswith(cause)
