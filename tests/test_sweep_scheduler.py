"""The scheduler and the store: what runs, how often, with how many threads, and under which lock.

A fake run function stands in for training (``rnnreg.sweep.run_task``, looked up at call time by the in-process
executor), so these tests count runs and read the worker's state without training a model; one test spawns a
real two-process pool with tiny runs to read back the threads each worker was given.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import rnnreg.outputs
import rnnreg.sweep
from rnnreg.ablation import RunTask, build_plan, data_fingerprint, tasks_for
from rnnreg.cli import main
from rnnreg.config import DataConfig, Experiment, ModelConfig, TrainConfig
from rnnreg.data import Corpus, load_corpus
from rnnreg.fsio import OutputLock, OutputLockedError
from rnnreg.sweep import RunStore, check_manifest, sweep

BASE = Experiment(model=ModelConfig(embed_dim=4, hidden_dim=4), train=TrainConfig(epochs=1, batch_size=16))


def _corpus() -> Corpus:
    def rows(n: int, start: int) -> list[tuple[str, int]]:
        return [(f"the {'good fun' if i % 2 else 'bad dull'} film {i + start}", i % 2) for i in range(n)]

    return Corpus("tiny", rows(24, 0), rows(8, 100), rows(8, 200), ["neg", "pos"])


class FakeRuns:
    """``run(task, corpus)`` that records each call; ``status`` decides a run's outcome per (variant, seed)."""

    def __init__(self) -> None:
        self.calls: list[RunTask] = []
        self.status: dict[tuple[str, int], str] = {}
        self.probe: Any = None  # called inside every run

    def __call__(self, task: RunTask, corpus: Corpus) -> dict[str, Any]:
        self.calls.append(task)
        if self.probe is not None:
            self.probe(task)
        status = self.status.get((task.variant, task.seed), "ok")
        n = len(corpus.test)
        pred = [(i + task.seed) % 2 for i in range(n)]
        acc = sum(p == y for p, (_, y) in zip(pred, corpus.test, strict=True)) / n
        return {
            "key": task.key,
            "variant": task.variant,
            "kind": task.kind,
            "seed": task.seed,
            "status": status,
            "error": None if status == "ok" else "RuntimeError: planned",
            "test_acc": acc if status == "ok" else None,
            "test_f1": acc if status == "ok" else None,
            "val_acc": 0.5,
            "val_f1": 0.5,
            "test_pred": pred,
            "best_epoch": 1,
            "epochs_run": 2,
            "truncated": False,
            "amp": "off",
            "threads": torch.get_num_threads(),
            "wall_s": 0.0,
        }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    runs = FakeRuns()
    monkeypatch.setattr(rnnreg.sweep, "run_task", runs)
    return runs


def _tasks(user: list[list[str]], seeds: int = 2, linear: bool = True) -> list[RunTask]:
    plan = build_plan("none", BASE, user, seeds=seeds, linear=linear)
    return tasks_for(plan, BASE, data_fingerprint(_corpus()))


# ---------------------------------------------------------------------------------------------------------------
# What runs


def test_a_failed_run_is_retried_by_the_next_sweep_and_a_diverged_one_is_kept(fake: FakeRuns, tmp_path: Path) -> None:
    tasks = _tasks([["a"], ["b", "train.lr=0.01"]])  # 2 variants + the linear reference, 2 seeds: 6 runs
    store = RunStore(tmp_path)
    fake.status = {("a", 1): "failed", ("b", 0): "diverged"}
    first = sweep(tasks, _corpus(), store, workers=1, threads=1, progress=False)
    assert (first.ran, first.reused) == (6, 0)
    assert sorted((r["variant"], r["seed"], r["status"]) for r in first.failed) == [
        ("a", 1, "failed"),
        ("b", 0, "diverged"),
    ]
    fake.calls.clear()
    fake.status = {}
    second = sweep(tasks, _corpus(), store, workers=1, threads=1, progress=False)
    assert [(t.variant, t.seed) for t in fake.calls] == [("a", 1)]  # only the failed run, once
    assert (second.ran, second.reused) == (1, 5)
    by_run = {(r["variant"], r["seed"]): r["status"] for r in second.records.values()}
    assert by_run[("a", 1)] == "ok" and by_run[("b", 0)] == "diverged"  # a diverged run is a result
    assert [r["status"] for r in second.failed] == ["diverged"]
    fake.calls.clear()
    third = sweep(tasks, _corpus(), store, workers=1, threads=1, progress=False)
    assert fake.calls == [] and (third.ran, third.reused) == (0, 6)


def test_identical_variants_share_one_run_per_seed(fake: FakeRuns, tmp_path: Path) -> None:
    # "same" is "a" under another name: the same configuration, so the same runs.
    tasks = _tasks([["a"], ["same"], ["b", "train.lr=0.01"]], seeds=3, linear=False)
    assert len(tasks) == 9 and len({t.key for t in tasks}) == 6
    result = sweep(tasks, _corpus(), RunStore(tmp_path), workers=1, threads=1, progress=False)
    assert sorted(t.key for t in fake.calls) == sorted({t.key for t in tasks})  # each run once, under either name
    assert {t.variant for t in fake.calls} >= {"b"} and result.ran == 6 and len(result.records) == 6
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 6
    for t in tasks:  # "same" finds its results under its own (shared) keys
        assert result.records[t.key]["status"] == "ok"


def test_the_in_process_worker_runs_with_the_threads_it_was_given(fake: FakeRuns, tmp_path: Path) -> None:
    threads: list[int] = []
    fake.probe = lambda task: threads.append(torch.get_num_threads())
    assert torch.get_num_threads() == 1  # set by the suite's fixture; the sweep must change it
    result = sweep(_tasks([["a"]], linear=False), _corpus(), RunStore(tmp_path), workers=1, threads=3, progress=False)
    assert threads == [3, 3]
    assert [r["threads"] for r in result.records.values()] == [3, 3]


def test_each_worker_process_runs_with_the_threads_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spawned workers start from OMP_NUM_THREADS=1; only the sweep's own setting can make them run 3 threads.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tasks = _tasks([["a"], ["b", "model.output_p=0.1"]], seeds=1, linear=False)
    result = sweep(tasks, _corpus(), RunStore(tmp_path), workers=2, threads=3, progress=False)
    assert [(r["status"], r["threads"]) for r in result.records.values()] == [("ok", 3), ("ok", 3)], [
        r.get("error") for r in result.records.values()
    ]


# ---------------------------------------------------------------------------------------------------------------
# The manifest: an --out holds the runs of one data set, told apart by content


def test_the_manifest_refuses_other_data_with_the_same_description(tmp_path: Path) -> None:
    c = _corpus()
    swapped = dataclasses.replace(c, train=[(t, 1 - y) if i < 2 else (t, y) for i, (t, y) in enumerate(c.train)])
    assert swapped.describe() == c.describe()  # same sizes, same class counts: only the content tells them apart
    check_manifest(tmp_path, {"fingerprint": data_fingerprint(c), "data": c.describe()}, force=False)
    with pytest.raises(ValueError, match="holds runs of other data"):
        check_manifest(tmp_path, {"fingerprint": data_fingerprint(swapped), "data": swapped.describe()}, force=False)
    assert json.loads((tmp_path / "ablate.json").read_text())["fingerprint"] == data_fingerprint(c)  # kept


def test_the_manifest_accepts_the_same_data_under_another_description(tmp_path: Path) -> None:
    c = _corpus()
    check_manifest(tmp_path, {"fingerprint": data_fingerprint(c), "data": "reviews.csv: 40 texts"}, force=False)
    check_manifest(tmp_path, {"fingerprint": data_fingerprint(c), "data": "moved/reviews.csv: 40 texts"}, force=False)
    assert json.loads((tmp_path / "ablate.json").read_text())["data"] == "moved/reviews.csv: 40 texts"


# ---------------------------------------------------------------------------------------------------------------
# `rnnreg ablate`: the lock on --out, and data that only the fingerprint tells apart


def _write_csv(path: Path, flip: int = -1) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(40):
            label = i % 2
            if flip >= 0 and i in (flip, flip + 1):  # swap the labels of a pair: the class counts stay
                label = 1 - label
            w.writerow([f"the {'good fun' if i % 2 else 'bad dull'} film number {i}", ("neg", "pos")[label]])
    return path


def _argv(data: Path, out: Path) -> list[str]:
    return [
        "ablate",
        "--data",
        str(data),
        "--text-col",
        "review",
        "--label-col",
        "sentiment",
        "--out",
        str(out),
        "--seeds",
        "3",
        "--preset",
        "none",
        "--variant",
        "a",
        "--variant",
        "b",
        "train.lr=0.01",
        "--workers",
        "1",
        "--threads",
        "1",
    ]


def test_the_out_lock_is_held_from_before_the_first_run_to_after_the_last_write(
    fake: FakeRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    data = _write_csv(tmp_path / "reviews.csv")
    events: list[tuple[str, str, bool]] = []

    def locked() -> bool:
        try:
            with OutputLock(out):  # flock conflicts between open files even within one process
                return False
        except OutputLockedError:
            return True

    def watch(module: Any, name: str) -> None:
        real = getattr(module, name)

        def wrapper(path: Path, *args: Any, **kwargs: Any) -> Any:
            events.append((name, Path(path).name, locked()))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    watch(rnnreg.sweep, "append_line")  # runs.jsonl
    watch(rnnreg.sweep, "atomic_write_text")  # the manifest
    watch(rnnreg.outputs, "atomic_write_text")  # summary.csv/json/md
    watch(rnnreg.outputs, "atomic_write_bytes")  # the plots
    fake.probe = lambda task: events.append(("run", task.variant, locked()))
    assert main(_argv(data, out)) == 0
    capsys.readouterr()
    kinds = [kind for kind, _, _ in events]
    assert kinds.count("run") == 9 and kinds.count("append_line") == 9
    assert {"ablate.json", "summary.csv", "summary.json", "summary.md"} <= {name for _, name, _ in events}
    assert [e for e in events if not e[2]] == []  # every run and every write happened under the lock
    assert not locked()  # and the lock is free once the command returns


def test_ablate_refuses_an_out_of_other_data_that_describes_itself_the_same(
    fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    first = _write_csv((tmp_path / "one").mkdir() or tmp_path / "one" / "reviews.csv")
    second = _write_csv((tmp_path / "two").mkdir() or tmp_path / "two" / "reviews.csv", flip=4)
    one, two = (load_corpus(DataConfig(str(p), text_col="review", label_col="sentiment")) for p in (first, second))
    assert one.describe() == two.describe() and data_fingerprint(one) != data_fingerprint(two)
    assert main(_argv(first, out)) == 0
    before = (out / "runs.jsonl").read_text()
    capsys.readouterr()
    assert main(_argv(second, out)) == 2
    assert "holds runs of other data" in capsys.readouterr().err
    assert (out / "runs.jsonl").read_text() == before
