"""The run store, resuming, executors, and `rnnreg ablate` end to end on data it has never seen."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnreg.ablation import build_plan, data_fingerprint, tasks_for
from rnnreg.cli import main
from rnnreg.config import Experiment, ModelConfig, TrainConfig
from rnnreg.data import Corpus
from rnnreg.fsio import OutputLock
from rnnreg.sweep import RunStore, check_manifest, split_cores, sweep

TINY_SETS = [
    "model.embed_dim=8",
    "model.hidden_dim=8",
    "train.batch_size=16",
    "train.lr=0.01",
    "train.eval_batch_size=64",
]


def _write_csv(path: Path, n: int = 80, seed: int = 0, classes: tuple[str, ...] = ("neg", "pos")) -> Path:
    rng = random.Random(seed)
    cue = {"neg": ["bad", "dull"], "pos": ["good", "fun"], "meh": ["okay"]}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(n):
            label = classes[i % len(classes)]
            words = [rng.choice(["the", "film", "was", "a", "plot"]) for _ in range(rng.randint(2, 6))]
            words.insert(rng.randint(0, len(words)), rng.choice(cue[label]))
            w.writerow([" ".join(words), label])
    return path


def _ablate(data: Path, out: Path, *extra: str) -> list[str]:
    sets = [x for s in TINY_SETS for x in ("--set", s)]
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
        "--epochs",
        "1",
        "--workers",
        "1",
        "--threads",
        "1",  # tiny models: a second thread only adds synchronisation on a busy machine
        *sets,
        *extra,
    ]


# ---------------------------------------------------------------------------------------------------------------
# The store


def test_store_appends_records_and_reads_them_back_by_key(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.append({"key": "a", "status": "ok", "x": 1})
    store.append({"key": "b", "status": "failed", "x": 2})
    store.append({"key": "b", "status": "ok", "x": 3})  # a rerun of a failed run: the later line wins
    state = store.load()
    assert state.records == {"a": {"key": "a", "status": "ok", "x": 1}, "b": {"key": "b", "status": "ok", "x": 3}}
    assert state.problems == []


def test_a_torn_last_line_is_reported_and_ignored(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.append({"key": "a", "status": "ok"})
    with store.path.open("ab") as f:
        f.write(b'{"key": "b", "stat')  # a kill in the middle of a write
    state = store.load()
    assert list(state.records) == ["a"]
    assert len(state.problems) == 1 and "last line" in state.problems[0]


def test_a_corrupt_middle_line_is_reported_with_its_number(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.path.write_text('{"key": "a", "status": "ok"}\nnot json\n[1, 2]\n{"key": "c", "status": "ok"}\n')
    state = store.load()
    assert sorted(state.records) == ["a", "c"]
    assert [p.split(": ")[1].split(" is")[0] for p in state.problems] == ["line 2", "line 3"]


def test_an_out_folder_with_other_data_is_refused_unless_forced(tmp_path: Path) -> None:
    check_manifest(tmp_path, {"fingerprint": "aaa", "data": "first data"}, force=False)
    check_manifest(tmp_path, {"fingerprint": "aaa", "data": "first data"}, force=False)  # same data: fine
    with pytest.raises(ValueError, match=r"holds runs of other data \(first data\).*force=True"):
        check_manifest(tmp_path, {"fingerprint": "bbb", "data": "second data"}, force=False)
    check_manifest(tmp_path, {"fingerprint": "bbb", "data": "second data"}, force=True)
    assert json.loads((tmp_path / "ablate.json").read_text())["fingerprint"] == "bbb"


@pytest.mark.parametrize(
    ("workers", "runs", "cores", "expected"),
    [(None, 30, 2, (2, 1)), (1, 30, 2, (1, 2)), (None, 1, 2, (1, 2)), (None, 30, 8, (8, 1)), (3, 30, 8, (3, 2))],
    # workers, runs, cores -> (workers, threads)
)
def test_workers_times_threads_never_exceeds_the_cores(
    workers: int | None, runs: int, cores: int, expected: tuple[int, int]
) -> None:
    assert split_cores(workers, runs, cores) == expected
    assert expected[0] * expected[1] <= cores


@pytest.mark.parametrize("workers", [0, -2])
def test_workers_must_be_positive(workers: int) -> None:
    with pytest.raises(ValueError, match=r"^workers must be >= 1 \(got -?\d\)"):
        split_cores(workers, 10, 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"executor": "threads"}, "executor must be one of process, ray (got 'threads')"),
        ({"address": "127.0.0.1:1"}, "address '127.0.0.1:1' names a Ray cluster; it needs executor='ray'"),
        ({"workers": 0}, "workers must be >= 1 (got 0)"),
        ({"threads": 0}, "threads must be >= 1 (got 0)"),
    ],
)
def test_sweep_errors_name_its_parameters_not_cli_flags(tmp_path: Path, options: dict, message: str) -> None:
    tasks = tasks_for(build_plan("none", BASE, [["a"]], seeds=1, linear=False), BASE, "fp")
    with pytest.raises(ValueError) as error:
        sweep(tasks, _tiny_corpus(), RunStore(tmp_path), progress=False, **options)
    assert str(error.value).startswith(message) and "--" not in str(error.value), str(error.value)
    assert not (tmp_path / "runs.jsonl").exists()  # refused before anything ran


# ---------------------------------------------------------------------------------------------------------------
# Sweeps


def _tiny_corpus() -> Corpus:
    rng = random.Random(1)

    def rows(k: int) -> list[tuple[str, int]]:
        out = []
        for i in range(k):
            cue = rng.choice(["good", "fun"] if i % 2 else ["bad", "dull"])
            out.append((f"the {cue} film was {rng.choice(['long', 'short', 'new'])}", i % 2))
        return out

    return Corpus("tiny", rows(40), rows(12), rows(12), ["neg", "pos"])


BASE = Experiment(model=ModelConfig(embed_dim=4, hidden_dim=4), train=TrainConfig(epochs=1, batch_size=16))


def test_a_second_sweep_reuses_every_finished_run_and_a_larger_one_runs_only_the_new(tmp_path: Path) -> None:
    corpus = _tiny_corpus()
    fp = data_fingerprint(corpus)
    store = RunStore(tmp_path)
    two = tasks_for(build_plan("none", BASE, [["a"], ["b", "train.lr=0.01"]], seeds=2), BASE, fp)
    first = sweep(two, corpus, store, workers=1, threads=1, progress=False)
    assert (first.ran, first.reused, first.failed) == (6, 0, [])
    again = sweep(two, corpus, store, workers=1, threads=1, progress=False)
    assert (again.ran, again.reused) == (0, 6)
    assert again.records == first.records
    three = tasks_for(build_plan("none", BASE, [["a"], ["b", "train.lr=0.01"]], seeds=3), BASE, fp)
    more = sweep(three, corpus, store, workers=1, threads=1, progress=False)
    assert (more.ran, more.reused) == (3, 6)
    assert len(store.path.read_text().splitlines()) == 9


def test_two_worker_processes_give_the_same_records_as_one(tmp_path: Path) -> None:
    corpus = _tiny_corpus()
    plan = build_plan("none", BASE, [["a"], ["b", "model.output_p=0.5"]], seeds=1, linear=False)
    tasks = tasks_for(plan, BASE, "fp")
    one = sweep(tasks, corpus, RunStore(tmp_path / "one"), workers=1, threads=1, progress=False).records
    two = sweep(tasks, corpus, RunStore(tmp_path / "two"), workers=2, progress=False).records
    volatile = {"wall_s", "seconds", "threads"}

    def strip(records: dict) -> dict:
        return {k: {f: v for f, v in r.items() if f not in volatile} for k, r in records.items()}

    assert strip(one) == strip(two)


# ---------------------------------------------------------------------------------------------------------------
# `rnnreg ablate` end to end


def test_ablate_on_a_csv_it_has_never_seen_prints_the_table_and_writes_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_csv(tmp_path / "reviews.csv")
    out = tmp_path / "out"
    assert main(_ablate(data, out, "--seeds", "2")) == 0
    printed = capsys.readouterr().out
    for phrase in ("regularized vs baseline", "linear reference [reference]", "without dropout", "Over 2 paired"):
        assert phrase in printed
    assert "no verdict: 2 seeds" in printed  # too few seeds for a verdict, and the table says so
    for name in ("runs.jsonl", "summary.csv", "summary.json", "summary.md", "means.png", "forest.png", "curves.png"):
        assert (out / name).is_file(), name
    assert (out / "means.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 7  # 6 variants + the linear reference, 2 seeds
    summary = json.loads((out / "summary.json").read_text())  # strict JSON: no NaN
    assert [v["name"] for v in summary["variants"]][-1] == "linear reference"
    assert all(v["seeds"] == 2 for v in summary["variants"])

    # The same command again resumes: nothing is trained, the summaries are redrawn from the store.
    assert main(_ablate(data, out, "--seeds", "2")) == 0
    assert "0 run(s) trained now, 14 reused" in capsys.readouterr().out
    assert len((out / "runs.jsonl").read_text().splitlines()) == 14


def test_sigterm_then_sigkill_mid_sweep_lose_only_the_runs_in_flight(tmp_path: Path) -> None:
    data = _write_csv(tmp_path / "reviews.csv")
    out = tmp_path / "out"
    argv = _ablate(data, out, "--seeds", "3", "--preset", "none", "--variant", "a", "--variant", "b", "train.lr=0.02")
    cmd = [sys.executable, "-m", "rnnreg.cli", *argv]  # 3 seeds x (a, b, the linear reference) = 9 runs
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = out / "runs.jsonl"

    def lines() -> list[bytes]:
        return runs.read_bytes().splitlines() if runs.exists() else []

    def complete() -> list[str]:
        """Keys of the whole records: a SIGKILL can tear the record being written (between pages)."""
        keys = []
        for line in lines():
            try:
                keys.append(json.loads(line)["key"])
            except ValueError:
                continue
        return keys

    def stop_after(n: int, sig: signal.Signals) -> subprocess.Popen[str]:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(lines()) < n and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        return proc

    term = stop_after(1, signal.SIGTERM)
    err = term.stderr.read() if term.stderr else ""
    assert term.returncode == 143, err
    assert "stopped by SIGTERM" in err and "the same command resumes" in err
    after_term = [json.loads(line)["key"] for line in lines()]
    assert 1 <= len(after_term) < 9, "the signal must land mid-sweep"

    kill = stop_after(len(after_term) + 2, signal.SIGKILL)
    assert kill.returncode == -signal.SIGKILL
    kept = complete()
    assert kept[: len(after_term)] == after_term and len(kept) < 9

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{9 - len(kept)} run(s) trained now, {len(kept)} reused" in rerun.stdout
    final = complete()
    assert final[: len(kept)] == kept and len(set(final)) == len(final) == 9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # The library names each parameter and the CLI may say the flag instead: both spellings hold these texts.
        (["--data", "nosuchdata"], "neither a data set (movies, tweets, amazon, nyt, toy, synthetic)"),
        (["--preset", "fancy"], "unknown preset 'fancy'; choose one of default, notebook, full, none"),
        (["--seeds", "0"], "seeds must be an int >= 1 (got 0)"),
        (["--workers", "0"], "workers must be >= 1 (got 0)"),
        (["--threads", "0"], "threads must be >= 1 (got 0)"),
        (["--epochs", "0"], "epochs must be > 0 (got 0)"),
        (["--variant", "x", "model.nope=1"], "variant x: model.nope: unknown key"),
        (["--variant", "x", "model.input_p=2"], "variant x: model.input_p must be a probability"),
        (["--executor", "threads"], "executor must be one of process, ray (got 'threads')"),
        (["--address", "127.0.0.1:1"], "address '127.0.0.1:1' names a Ray cluster; it needs --executor ray"),
        (["--metric", "loss"], "metric must be one of test_acc, test_f1, val_acc, val_f1"),
    ],
)
def test_bad_input_gives_one_line_exit_2_and_keeps_what_out_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    data = _write_csv(tmp_path / "reviews.csv", n=24)
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text('{"key": "k", "status": "ok"}\n')
    argv = _ablate(data, out)
    if args[0] == "--data":
        argv[argv.index("--data") + 1] = args[1]
        args = []
    assert main([*argv, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnreg: error: ") and message in err and err.count("\n") == 1, err
    assert (out / "runs.jsonl").read_text() == '{"key": "k", "status": "ok"}\n'


def test_data_with_one_class_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_csv(tmp_path / "one.csv", n=20, classes=("pos",))
    assert main(_ablate(data, tmp_path / "out")) == 2
    assert "has a single class ('pos')" in capsys.readouterr().err


def test_an_unwritable_out_is_refused_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_csv(tmp_path / "reviews.csv", n=24)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(_ablate(data, blocker / "out")) == 2
    assert "is not writable" in capsys.readouterr().err


def test_a_second_ablate_on_the_same_out_is_refused_with_the_first_ones_pid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_csv(tmp_path / "reviews.csv", n=24)
    out = tmp_path / "out"
    with OutputLock(out):  # flock locks conflict between open files even within one process
        assert main(_ablate(data, out)) == 2
    assert f"in use by another rnnreg process (pid {os.getpid()})" in capsys.readouterr().err


def test_out_with_runs_of_other_data_is_refused_and_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    first = _write_csv(tmp_path / "a.csv", n=30, seed=1)
    assert main(_ablate(first, out, "--seeds", "1", "--preset", "none", "--variant", "a")) == 0
    before = (out / "runs.jsonl").read_text()
    second = _write_csv(tmp_path / "b.csv", n=30, seed=2)
    capsys.readouterr()
    assert main(_ablate(second, out, "--seeds", "1", "--preset", "none", "--variant", "a")) == 2
    assert "holds runs of other data (a.csv" in capsys.readouterr().err
    assert (out / "runs.jsonl").read_text() == before
    assert main(_ablate(second, out, "--seeds", "1", "--preset", "none", "--variant", "a", "--force")) == 0
    assert (out / "runs.jsonl").read_text().startswith(before)


def test_executor_ray_without_ray_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    data = _write_csv(tmp_path / "reviews.csv", n=24)
    assert main(_ablate(data, tmp_path / "out", "--executor", "ray")) == 2
    assert "pip install 'rnnreg[ray]'" in capsys.readouterr().err


def test_a_record_appended_after_a_torn_last_line_is_kept_whole(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.append({"key": "a", "status": "ok"})
    with open(store.path, "ab") as f:
        f.write(b'{"key": "b", "sta')  # what a SIGKILL between pages of a long write leaves
    store.append({"key": "c", "status": "ok"})
    state = store.load()
    assert set(state.records) == {"a", "c"}
    assert len(state.problems) == 1 and "line 2" in state.problems[0]
