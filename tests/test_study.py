"""rnnreg.study: the main job as a library function; `rnnreg ablate` is the same function behind a parser.

What a refused call must leave behind (nothing) is tested here for every kind of refusal: bad options, data on
which no answer is possible, an output folder that holds other data.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from pathlib import Path

import pytest

from rnnreg import study as study_module
from rnnreg import sweep as sweep_module
from rnnreg.cli import main
from rnnreg.study import ablate, plan_study

TINY = ["model.embed_dim=8", "model.hidden_dim=8", "train.batch_size=16", "train.lr=0.01", "train.eval_batch_size=64"]


def _write_csv(path: Path, n: int = 60, classes: tuple[str, ...] = ("neg", "pos")) -> Path:
    rng = random.Random(0)
    cue = {"neg": "dull", "pos": "fun", "meh": "okay"}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            label = classes[i % len(classes)]
            words = [rng.choice(["the", "film", "was", "a", "plot"]) for _ in range(rng.randint(2, 5))]
            w.writerow([" ".join([*words, cue[label]]), label])
    return path


def _cli(data: Path, out: Path, *extra: str) -> list[str]:
    sets = [x for s in TINY for x in ("--set", s)]
    head = ["ablate", "--data", str(data), "--out", str(out), "--max-epochs", "1", "--workers", "1", "--threads", "1"]
    return [*head, *sets, *extra]


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    """Every file under ``folder`` with its bytes; None when the folder does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _comparable(record: dict) -> dict:
    """A run record without what differs between two identical runs: wall time, in all and by part."""
    return {k: v for k, v in record.items() if k not in ("wall_s", "seconds")}


def _untimed(obj: object) -> object:
    """``obj`` (parsed JSON) with every ``wall_s`` and ``seconds`` removed, at any depth."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in ("wall_s", "seconds")}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _csv_untimed(path: Path) -> list[list[str]]:
    rows = list(csv.reader(path.read_text().splitlines()))
    drop = rows[0].index("wall_s")
    return [row[:drop] + row[drop + 1 :] for row in rows]


def test_the_cli_and_the_function_give_identical_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_csv(tmp_path / "reviews.csv")
    plan = ["--preset", "none", "--variant", "a", "--variant", "b", "model.hidden_dim=12", "--seeds", "2"]
    assert main(_cli(data, tmp_path / "cli", *plan)) == 0
    printed = capsys.readouterr().out

    result = ablate(
        str(data),
        overrides=TINY,
        preset="none",
        variants=[["a"], ["b", "model.hidden_dim=12"]],
        seeds=2,
        max_epochs=1,
        workers=1,
        threads=1,
        out=tmp_path / "py",
    )
    assert result.out == tmp_path / "py" and result.ran == 6 and result.reused == 0 and not result.failed
    assert result.answer in printed
    # The files agree on everything but the wall time of each run.
    for side in ("cli", "py"):
        assert (tmp_path / side / "summary.md").is_file()
    assert _untimed(json.loads((tmp_path / "cli" / "summary.json").read_text())) == _untimed(
        json.loads((tmp_path / "py" / "summary.json").read_text())
    )
    assert _csv_untimed(tmp_path / "cli" / "summary.csv") == _csv_untimed(tmp_path / "py" / "summary.csv")
    assert (tmp_path / "cli" / "ablate.json").read_text() == (tmp_path / "py" / "ablate.json").read_text()
    records = {}
    for side in ("cli", "py"):
        lines = (tmp_path / side / "runs.jsonl").read_text().splitlines()
        records[side] = sorted((_comparable(json.loads(line)) for line in lines), key=lambda r: r["key"])
    assert len(records["cli"]) == 6 and records["cli"] == records["py"]


def test_three_rows_of_data_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_csv(tmp_path / "three.csv", n=3)
    out = tmp_path / "out"
    assert main(_cli(data, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rnnreg: error: three.csv: the val split is empty"), err
    assert "train 3 / val 0 / test 0" in err and "data.val_frac" in err
    assert not out.exists()


SKEWED = ("neg",) * 9 + ("pos",)  # one text in ten is positive


@pytest.mark.parametrize(
    ("n", "classes", "sets", "split", "found"),
    [
        (3, ("neg", "pos"), [], "val", "is empty"),  # 3 rows: train 3 / val 0 / test 0
        (40, ("neg", "pos"), ["data.val_frac=0.0"], "val", "is empty"),
        (20, SKEWED, ["data.val_frac=0.1"], "val", "holds 2 examples of 1 class"),
        (40, SKEWED, ["data.val_frac=0.25", "data.test_frac=0.1"], "test", "holds 4 examples of 1 class"),
        (40, ("neg", "pos"), ["data.test_frac=0.0"], None, None),  # no test split: compared on validation
    ],
)
def test_each_split_needs_two_classes_for_its_purpose(
    tmp_path: Path, n: int, classes: tuple[str, ...], sets: list[str], split: str | None, found: str | None
) -> None:
    data = _write_csv(tmp_path / "d.csv", n=n, classes=classes)
    if split is None:
        study = plan_study(str(data), overrides=[*TINY, *sets], out=tmp_path / "out")
        assert study.metric == "val_acc"
        return
    with pytest.raises(ValueError, match=f"the {split} split {found}"):
        plan_study(str(data), overrides=[*TINY, *sets], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_test_metric_without_a_test_split_is_refused(tmp_path: Path) -> None:
    data = _write_csv(tmp_path / "d.csv", n=40)
    with pytest.raises(ValueError, match=r"the test split is empty .*compare on a validation metric"):
        plan_study(str(data), overrides=[*TINY, "data.test_frac=0.0"], metric="test_acc", out=tmp_path / "o")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "nope"], "executor must be one of process, ray (got 'nope')"),
        (["--address", "127.0.0.1:1"], "address '127.0.0.1:1' names a Ray cluster; it needs --executor ray"),
        (["--metric", "loss"], "metric must be one of test_acc"),
        (["--seeds", "0"], "seeds must be an int >= 1 (got 0)"),
        (["--max-epochs", "0"], "train.epochs must be > 0 (got 0)"),
        (["--workers", "0"], "workers"),
        (["--min-effect", "-0.1"], "min_effect must be a number >= 0 (got -0.1)"),
        (["--preset", "fancy"], "unknown preset 'fancy'"),
    ],
)
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-out", "existing-out"])
def test_a_refused_command_leaves_out_exactly_as_it_found_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str, fresh: bool
) -> None:
    data = _write_csv(tmp_path / "reviews.csv")
    out = tmp_path / "out"
    if not fresh:  # an --out from an earlier run, lock file and all
        out.mkdir()
        (out / ".lock").write_text("12345\n")
        (out / "runs.jsonl").write_text('{"key": "k", "status": "ok"}\n')
        (out / "ablate.json").write_text('{"fingerprint": "x", "data": "old"}\n')
    before = _snapshot(out)
    assert main([*_cli(data, out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnreg: error: ") and err.count("\n") == 1 and message in err, err
    assert _snapshot(out) == before


def test_executor_ray_without_ray_is_refused_before_out_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        sweep_module.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    out = tmp_path / "out"
    assert main([*_cli(_write_csv(tmp_path / "r.csv"), out), "--executor", "ray"]) == 2
    assert "needs Ray: pip install 'rnnreg[ray]'" in capsys.readouterr().err
    assert not out.exists()


def test_an_out_of_other_data_is_refused_byte_identical_and_unlocked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "ablate.json").write_text('{"fingerprint": "other", "data": "someone else\'s data"}\n')
    (out / "runs.jsonl").write_text('{"key": "k", "status": "ok"}\n')
    before = _snapshot(out)
    assert main(_cli(_write_csv(tmp_path / "r.csv"), out)) == 2
    err = capsys.readouterr().err
    assert "holds runs of other data (someone else's data)" in err and "--force" in err and "another --out" in err
    assert _snapshot(out) == before  # no .lock either: the check reads before it locks


def test_plan_study_writes_nothing_and_describes_the_runs(tmp_path: Path) -> None:
    data = _write_csv(tmp_path / "d.csv")
    study = plan_study(str(data), overrides=TINY, seeds=2, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert len(study.tasks) == 2 * (len(study.plan.variants) + 1)  # + the linear reference
    assert study.describe()[1].startswith(
        f"ablate: {len(study.plan.variants)} variants + the linear reference, 2 seeds"
    )
    assert study.min_effect == pytest.approx(max(0.01, 1 / len(study.corpus.test)))
    assert study.finished() == 0


def test_default_out_is_named_after_the_data(tmp_path: Path) -> None:
    study = plan_study(str(_write_csv(tmp_path / "reviews.csv")), overrides=TINY)
    assert study.out == Path("runs") / "ablate-reviews"
    assert study_module.default_out(study.plan.variants[0].experiment) == study.out
