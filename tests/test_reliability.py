"""Reliability of `rnnreg train` and `evaluate` under divergence, signals, SIGKILL, storage faults, bad checkpoints.

Every fault ends in one line and a known exit status, and never costs a complete file. Kill tests fork the test
process (no second torch import) and SIGKILL the child at a seeded random event: a training step, an evaluation, a
checkpoint write half done, or the rename that publishes it. Resuming must then end bit-identical to a run that was
never interrupted.
"""

from __future__ import annotations

import ast
import dataclasses
import errno
import hashlib
import io
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rnnreg import fit as fit_module
from rnnreg import fsio
from rnnreg.cli import main
from rnnreg.config import DataConfig, Experiment, ModelConfig, TrainConfig
from rnnreg.data import Corpus
from rnnreg.data.sources import vader
from rnnreg.fit import TrainingDiverged, fit, load_model, prepare, read_checkpoint

ROWS = "".join(f"{'good fun movie' if i % 2 else 'bad dull plot'} {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
TINY = ["--set", "model.embed_dim=8", "--set", "model.hidden_dim=8", "--set", "train.batch_size=8"]


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + ROWS)
    return path


def _train(csv: Path, out: Path, *extra: str, epochs: int = 3) -> list[str]:
    return ["train", "--data", str(csv), "--epochs", str(epochs), "--out", str(out), *TINY, *extra]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# ---------------------------------------------------------------------------------------------------------------
# Divergence


def _tiny_corpus() -> Corpus:
    rng = random.Random(0)

    def make(k: int) -> list[tuple[str, int]]:
        return [(" ".join(rng.choice(["good", "bad", "the", "plot"]) for _ in range(5)), i % 2) for i in range(k)]

    return Corpus("tiny", make(48), make(12), make(12), ["negative", "positive"])


def _exploding(**train: object) -> Experiment:
    # lr=1e30 without clipping: the first step sends the weights to inf, every later gradient is non-finite.
    tc = TrainConfig(epochs=4, batch_size=8, lr=1e30, clip="none", **train)  # type: ignore[arg-type]
    return Experiment(DataConfig(source="tiny"), ModelConfig(embed_dim=8, hidden_dim=8), tc)


def test_divergence_stops_training_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    data = prepare(DataConfig(source="tiny"), corpus=_tiny_corpus())
    kept: dict[str, bytes] = {}

    def progress(record: fit_module.EpochRecord) -> None:
        kept["last.pt"] = (tmp_path / "last.pt").read_bytes()

    # 6 steps per epoch, the first two finite: epoch 1 ends 4 skipped steps in a row, epoch 2 reaches 8.
    experiment = _exploding(max_skipped_steps=8)
    with pytest.raises(TrainingDiverged) as info:
        fit(experiment, data, seed=0, out_dir=tmp_path, progress=progress)
    message = str(info.value)
    assert "\n" not in message
    assert "8 consecutive steps in epoch 2" in message
    for hint in ("train.lr", "train.clip=norm", "bf16"):
        assert hint in message
    assert (tmp_path / "last.pt").read_bytes() == kept["last.pt"]  # epoch 1's checkpoint, untouched
    assert not (tmp_path / "model.pt").exists()  # no finished-looking model from a diverged run


def test_the_skip_streak_survives_a_resume(tmp_path: Path) -> None:
    data = prepare(DataConfig(source="tiny"), corpus=_tiny_corpus())
    one_epoch = _exploding(max_skipped_steps=8)
    one_epoch = Experiment(one_epoch.data, one_epoch.model, dataclasses.replace(one_epoch.train, epochs=1))
    fit(one_epoch, data, seed=0, out_dir=tmp_path)  # ends with 4 skipped steps in a row, under the limit
    with pytest.raises(TrainingDiverged, match="8 consecutive steps in epoch 2"):  # as the uninterrupted run
        fit(_exploding(max_skipped_steps=8), data, seed=0, out_dir=tmp_path, resume=True)


def test_divergence_limit_zero_never_stops() -> None:
    data = prepare(DataConfig(source="tiny"), corpus=_tiny_corpus())
    result = fit(_exploding(max_skipped_steps=0), data, seed=0)
    assert len(result.history.epochs) == 4  # all epochs ran, though nearly every step was skipped
    assert result.history.skipped_steps >= 20


def test_diverged_cli_run_exits_1_with_one_line(csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # patience 0: the validation score of a run whose every step is skipped never improves, and early stopping
    # would end it at epoch 4, before the divergence limit
    argv = _train(
        csv,
        tmp_path / "run",
        "--set",
        "train.lr=1e30",
        "--set",
        "train.clip=none",
        "--set",
        "train.patience=0",
        epochs=30,
    )
    code, _, err = _run(argv, capsys)  # the default limit (50) is reached in epoch 13 of 4 steps each
    assert code == 1
    assert "training diverged: 50 consecutive steps" in _one_error_line(err)


# ---------------------------------------------------------------------------------------------------------------
# Forked children: interrupted and killed runs


def _fork(body: Callable[[], int]) -> tuple[int, int]:
    """Run ``body`` in a forked child whose stdout and stderr go to a pipe; returns (pid, read end)."""
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.close(read)
            os.dup2(write, 1)
            os.dup2(write, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            code = body()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    return pid, read


def _read_until(fd: int, marker: str | None, timeout: float = 120.0) -> str:
    """Read the child's output until ``marker`` appears (or, with None, until it closes the pipe)."""
    text, deadline = b"", time.monotonic() + timeout
    while marker is None or marker.encode() not in text:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise AssertionError(f"child gave no {marker!r} within {timeout} s; output so far: {text!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        text += chunk
    return text.decode()


def _wait(pid: int, fd: int) -> tuple[int, str]:
    rest = _read_until(fd, None)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), rest


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_keeps_the_checkpoint_and_prints_the_resume_command(
    csv: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    out = tmp_path / "run"
    pid, fd = _fork(lambda: main(_train(csv, out, epochs=10_000)))
    seen = _read_until(fd, "epoch   2/")  # stopped somewhere after epoch 2's checkpoint
    os.kill(pid, sig)
    exit_code, rest = _wait(pid, fd)
    assert exit_code == code, seen + rest
    (line,) = [x for x in rest.splitlines() if x.startswith("rnnreg: stopped")]
    assert f"stopped by {sig.name}" in line and "--resume" in line and f"--out {out}" in line
    state = read_checkpoint(out / "last.pt", "training")  # complete, and it is the epoch the line names
    assert f"holds epoch {state['epoch']}" in line
    assert [p.name for p in out.iterdir() if p.suffix == ".tmp"] == []


class _KillAt:
    """Counts events by kind in the child and SIGKILLs it at the chosen one (None: only count)."""

    KINDS = ("step", "eval", "write", "replace")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, kind: str | None = None, at: int = 0) -> None:
        self.counts = dict.fromkeys(self.KINDS, 0)
        self.kind, self.at = kind, at
        real_step, real_predict = fit_module.train_step, fit_module.predict
        real_write_all, real_replace = fsio._write_all, os.replace

        def step(*args: object, **kwargs: object) -> object:
            self._event("step")
            return real_step(*args, **kwargs)  # type: ignore[arg-type]

        def predict(*args: object, **kwargs: object) -> object:
            self._event("eval")
            return real_predict(*args, **kwargs)  # type: ignore[arg-type]

        def write_all(fd: int, data: bytes) -> None:
            if self._hit("write"):
                os.write(fd, data[: len(data) // 2])  # half a checkpoint on disk, then the kill
                self._die()
            real_write_all(fd, data)

        def replace(src: str, dst: str | Path) -> None:
            self._event("replace")
            real_replace(src, dst)

        monkeypatch.setattr(fit_module, "train_step", step)
        monkeypatch.setattr(fit_module, "predict", predict)
        monkeypatch.setattr(fsio, "_write_all", write_all)
        monkeypatch.setattr(fsio.os, "replace", replace)

    def _hit(self, kind: str) -> bool:
        self.counts[kind] += 1
        return kind == self.kind and self.counts[kind] == self.at

    def _event(self, kind: str) -> None:
        if self._hit(kind):
            self._die()

    @staticmethod
    def _die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # never reached


@pytest.fixture
def reference(csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, int]]:
    """An uninterrupted run and the count of each kind of event in it."""
    with monkeypatch.context() as m:
        counter = _KillAt(m)
        assert main(_train(csv, tmp_path / "reference")) == 0
    return tmp_path / "reference", counter.counts


def _kill_resume_and_compare(
    csv: Path, out: Path, reference: Path, kind: str, at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def child() -> int:
        _KillAt(monkeypatch, kind, at)
        return main(_train(csv, out))

    pid, fd = _fork(child)
    exit_code, output = _wait(pid, fd)
    assert exit_code == -signal.SIGKILL, output
    # Never a torn checkpoint: each file is absent, or complete and readable.
    if (out / "last.pt").exists():
        read_checkpoint(out / "last.pt", "training")
    if (out / "model.pt").exists():
        load_model(out / "model.pt")
    resume = ["--resume"] if (out / "last.pt").exists() else []
    assert main(_train(csv, out, *resume)) == 0
    for name, tensor in _weights(reference / "model.pt").items():
        assert torch.equal(tensor, _weights(out / "model.pt")[name]), (kind, at, name)
    ref, got = (json.loads((d / "metrics.json").read_text()) for d in (reference, out))
    assert got["test"] == ref["test"]
    assert [e["train_loss"] for e in got["history"]["epochs"]] == [e["train_loss"] for e in ref["history"]["epochs"]]
    assert [p.name for p in out.iterdir() if p.suffix == ".tmp"] == []  # a killed write's temp file is swept


@pytest.mark.parametrize("kind", ["step", "eval", "write"])
def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(
    csv: Path, tmp_path: Path, reference: tuple[Path, dict[str, int]], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref_dir, counts = reference
    at = random.Random(f"kill-{kind}").randint(1, counts[kind])
    _kill_resume_and_compare(csv, tmp_path / "killed", ref_dir, kind, at, monkeypatch)


@pytest.mark.slow
def test_sigkill_at_every_event_then_resume_is_bit_identical(
    csv: Path, tmp_path: Path, reference: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    ref_dir, counts = reference
    events = [(kind, i) for kind in _KillAt.KINDS for i in range(1, counts[kind] + 1)]
    random.Random(2026).shuffle(events)
    for n, (kind, at) in enumerate(events):
        with pytest.MonkeyPatch.context() as m:
            _kill_resume_and_compare(csv, tmp_path / f"killed-{n}", ref_dir, kind, at, m)
        capsys.readouterr()


@pytest.mark.slow
def test_sigkill_from_outside_at_seeded_random_times_then_resume_is_bit_identical(
    csv: Path, tmp_path: Path, reference: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The real console entry point in a fresh interpreter, killed by another process while it trains."""
    ref_dir, _ = reference
    command = [sys.executable, "-m", "rnnreg.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def start(out: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*command, *_train(csv, out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert proc.stdout is not None
        while not proc.stdout.readline().startswith("data:"):  # imports done, training about to start
            pass
        return proc

    t0 = time.monotonic()
    timing = start(tmp_path / "timing")
    assert timing.wait(timeout=300) == 0
    timing.stdout.close()  # type: ignore[union-attr]
    span = time.monotonic() - t0
    rng = random.Random(9)
    for n in range(5):  # each costs a fresh interpreter importing torch: seconds, before it trains at all
        out = tmp_path / f"killed-{n}"
        proc = start(out)
        time.sleep(rng.uniform(0, span))
        proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()  # type: ignore[union-attr]
        if (out / "last.pt").exists():
            read_checkpoint(out / "last.pt", "training")
        resume = ["--resume"] if (out / "last.pt").exists() else []
        assert main(_train(csv, out, *resume)) == 0
        for name, tensor in _weights(ref_dir / "model.pt").items():
            assert torch.equal(tensor, _weights(out / "model.pt")[name]), (n, name)
        capsys.readouterr()


def test_every_torch_load_in_the_package_uses_weights_only() -> None:
    package = Path(fit_module.__file__).parent
    calls = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "load"):
                calls.append((path.name, node))
    assert calls, "no torch.load found: the scan is broken"
    for name, node in calls:
        flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
        assert flags.get("weights_only") == "True", f"{name}:{node.lineno} calls torch.load without weights_only=True"


# ---------------------------------------------------------------------------------------------------------------
# Resume, output folder, storage faults


def test_resume_with_nothing_to_resume_exits_2(csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(_train(csv, tmp_path / "empty", "--resume"), capsys)
    assert code == 2
    assert "nothing to resume" in _one_error_line(err)
    assert "epoch" not in out and not (tmp_path / "empty").exists()


def test_unwritable_out_is_refused_before_training(
    csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, err = _run(_train(csv, blocker / "run"), capsys)
    assert code == 2
    assert "not writable" in _one_error_line(err) and "--out" in err
    assert "epoch" not in out


def test_second_train_on_a_locked_out_is_refused_with_the_holders_pid(
    csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with fsio.OutputLock(out):  # the first run, here held by this process
        code, stdout, err = _run(_train(csv, out), capsys)
    assert code == 2
    assert f"in use by another rnnreg process (pid {os.getpid()})" in _one_error_line(err)
    assert "epoch" not in stdout and not (out / "last.pt").exists()


@pytest.mark.parametrize("err_no", [errno.ENOSPC, errno.EIO])
def test_failing_write_is_one_line_and_every_file_stays_intact(
    csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, err_no: int
) -> None:
    out = tmp_path / "run"
    assert main(_train(csv, out, epochs=1)) == 0
    before = _snapshot(out)
    assert set(before) == {"last.pt", "model.pt", "metrics.json"}
    real_write = os.write

    def failing(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[:100]))  # the disk takes a little, then fails
        raise OSError(err_no, os.strerror(err_no))

    capsys.readouterr()
    monkeypatch.setattr(fsio.os, "write", failing)
    code, _, err = _run(_train(csv, out, "--resume", epochs=2), capsys)
    monkeypatch.undo()
    assert code == 1
    line = _one_error_line(err)
    assert errno.errorcode[err_no] in line and "intact" in line
    assert _snapshot(out) == before  # byte for byte, and no temp file left


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


@pytest.fixture
def trained(csv: Path, tmp_path: Path) -> Path:
    out = tmp_path / "trained"
    assert main(_train(csv, out, epochs=1)) == 0
    return out


def _evaluate_error(checkpoint: Path, csv: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code, _, err = _run(["evaluate", str(checkpoint), "--data", str(csv)], capsys)
    assert code == 2
    return _one_error_line(err)


def test_model_checkpoint_holds_no_optimizer_state(trained: Path) -> None:
    model = read_checkpoint(trained / "model.pt", "model")
    assert model["kind"] == "model" and not {"optimizer", "scaler", "torch_rng", "batch_rng"} & set(model)
    assert "optimizer" in read_checkpoint(trained / "last.pt", "training")  # exact resume needs it


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b"", "truncated"),
        (lambda b: b"text,label\nhello,pos\n", "not a complete PyTorch file"),
    ],
    ids=["half", "ten-bytes", "empty", "a-csv"],
)
def test_damaged_checkpoint_is_refused_in_one_line(
    trained: Path, csv: Path, capsys: pytest.CaptureFixture[str], damage: Callable[[bytes], bytes], expected: str
) -> None:
    path = trained / "model.pt"
    path.write_bytes(damage(path.read_bytes()))
    assert expected in _evaluate_error(path, csv, capsys)


def _rewrite(path: Path, change: Callable[[dict], None]) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


def test_unknown_format_is_refused(trained: Path, csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _rewrite(trained / "model.pt", lambda c: c.update(format=99))
    assert "format 99, and this rnnreg reads format 1" in _evaluate_error(trained / "model.pt", csv, capsys)


def test_a_plain_tensor_file_is_not_a_checkpoint(tmp_path: Path, csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"weights": torch.ones(3)}, tmp_path / "other.pt")
    assert "not an rnnreg checkpoint" in _evaluate_error(tmp_path / "other.pt", csv, capsys)


def test_training_state_passed_as_a_model_is_refused(
    trained: Path, csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _evaluate_error(trained / "last.pt", csv, capsys)
    assert "a training state (last.pt), not a model checkpoint (model.pt)" in line


def test_altered_weights_are_refused(trained: Path, csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _rewrite(trained / "model.pt", lambda c: c["model"].update({"extra.weight": torch.ones(2)}))
    assert "do not fit the model" in _evaluate_error(trained / "model.pt", csv, capsys)


class _Payload:
    """Unpickling this runs ``os.system``: what a hostile 'checkpoint' would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(
    trained: Path, tmp_path: Path, csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    for name in ("model.pt", "last.pt"):
        ckpt = torch.load(trained / name, map_location="cpu", weights_only=True)
        ckpt["history"] = _Payload(marker)
        torch.save(ckpt, trained / name)
    line = _evaluate_error(trained / "model.pt", csv, capsys)
    assert "was refused" in line and "system" in line
    code, _, err = _run(_train(csv, trained, "--resume", epochs=2), capsys)
    assert code == 2 and "was refused" in _one_error_line(err)
    assert not marker.exists()


def test_resume_refuses_a_checkpoint_of_another_task(
    trained: Path, tmp_path: Path, csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.csv"
    other.write_text("text,label\n" + ROWS.replace(",pos", ",up").replace(",neg", ",down"))
    cases = [
        (_train(other, trained, "--resume", epochs=2), "trained on labels ['neg', 'pos'], this data has"),
        (_train(csv, trained, "--resume", "--set", "model.rnn=gru", epochs=2), "model.rnn: 'lstm' -> 'gru'"),
        (_train(csv, trained, "--resume", "--seed", "1", epochs=2), "seed 0, not 1"),
    ]
    before = _snapshot(trained)
    for argv, expected in cases:
        capsys.readouterr()
        code, _, err = _run(argv, capsys)
        assert code == 2 and expected in _one_error_line(err), err
    assert _snapshot(trained) == before
    code, out, _ = _run(_train(csv, trained, "--resume", epochs=2), capsys)  # only --epochs may change
    assert code == 0 and "epoch   2/2" in out and "epoch   1/2" not in out


def test_truncated_last_checkpoint_is_refused_on_resume(
    trained: Path, csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    last = trained / "last.pt"
    last.write_bytes(last.read_bytes()[:-100])
    code, _, err = _run(_train(csv, trained, "--resume", epochs=2), capsys)
    assert code == 2 and "truncated" in _one_error_line(err) and "delete it" in err


def test_stale_temp_files_are_swept_when_the_lock_is_taken(trained: Path, csv: Path) -> None:
    stale = trained / ".last.pt.abc123.tmp"
    shutil.copy(trained / "last.pt", stale)
    assert main(_train(csv, trained, "--resume", epochs=2)) == 0
    assert not stale.exists()


# ---------------------------------------------------------------------------------------------------------------
# Fetching data: pip's output, no network, checksums, a damaged cache


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


SNIPPETS = {name: f"1\t2.5\tgood {name}\r\n2\t-1.0\tbad {name}\r\n".encode() for name in vader.VADER_FILES.values()}


@pytest.fixture
def sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the vaderSentiment archive, with the pinned checksum pointed at it."""
    inner = _tar_gz({f"{vader._VADER_DIR}/{name}": content for name, content in SNIPPETS.items()})
    path = tmp_path / "pypi" / vader.VADER_SDIST
    path.parent.mkdir()
    path.write_bytes(_tar_gz({vader._VADER_INNER: inner}))
    monkeypatch.setattr(vader, "VADER_SDIST_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    return path


def _fake_pip(monkeypatch: pytest.MonkeyPatch, script: str) -> list[list[str]]:
    """Replace the pip command with a real child process running ``script`` (given DEST); returns the calls."""
    calls: list[list[str]] = []
    real_run = subprocess.run

    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        return real_run([sys.executable, "-c", f"DEST = {dest!r}\n" + script], **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(vader.subprocess, "run", run)
    return calls


NOISY_PIP = """
import shutil, sys
print("Collecting vaderSentiment==3.3.2")
print("WARNING: pip is configured with locations that require TLS/SSL", file=sys.stderr)
shutil.copy(SOURCE, DEST)
"""


def test_pip_output_stays_hidden_on_success(
    sdist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    calls = _fake_pip(monkeypatch, f"SOURCE = {str(sdist)!r}\n" + NOISY_PIP)
    folder = vader.fetch_vader(tmp_path / "cache")
    assert len(calls) == 1
    assert capfd.readouterr() == ("", "")  # nothing reached the terminal, at the file-descriptor level
    assert (folder / vader.VADER_FILES["movies"]).read_bytes() == SNIPPETS[vader.VADER_FILES["movies"]]
    vader.fetch_vader(tmp_path / "cache")  # offline afterwards: pip is not run again
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "import sys; print('ERROR: No matching distribution found (network is unreachable)', file=sys.stderr); "
            "sys.exit(1)",
            "pip exited with status 1: ERROR: No matching distribution found (network is unreachable)",
        ),
        ("pass", "pip reported success but saved no"),
    ],
    ids=["no-network", "nothing-saved"],
)
def test_failed_fetch_shows_pips_error_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], script: str, expected: str
) -> None:
    _fake_pip(monkeypatch, script)
    monkeypatch.setenv("RNNREG_CACHE", str(tmp_path / "cache"))
    code, _, err = _run(["train", "--data", "movies", "--out", str(tmp_path / "run")], capsys)
    line = _one_error_line(err)
    assert code == 2 and expected in line
    assert "Without network" in line and "pip download" in line and "RNNREG_CACHE" in line
    assert not (tmp_path / "cache" / vader.VADER_SDIST).exists()


def test_a_pip_that_hangs_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(cmd: list[str], **kwargs: object) -> None:
        raise subprocess.TimeoutExpired(cmd, vader._PIP_TIMEOUT_S)

    monkeypatch.setattr(vader.subprocess, "run", run)
    with pytest.raises(vader.DatasetUnavailableError, match=f"pip did not finish within {vader._PIP_TIMEOUT_S} s"):
        vader.fetch_vader(tmp_path / "cache")


def test_checksum_mismatch_is_refused_and_never_extracted(sdist: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / vader.VADER_SDIST).write_bytes(sdist.read_bytes()[:-1] + b"x")  # one byte changed
    with pytest.raises(vader.DatasetUnavailableError, match=r"expected .* it is corrupt or another release; delete it"):
        vader.fetch_vader(cache)
    assert not (cache / vader._VADER_DIR).exists()


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest"])
def test_a_damaged_cache_is_rebuilt_never_read(
    sdist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(sdist, cache / vader.VADER_SDIST)  # placed by hand: no pip
    folder = vader.fetch_vader(cache)
    movies = folder / vader.VADER_FILES["movies"]
    if damage == "truncate":
        movies.write_bytes(movies.read_bytes()[:5])
    elif damage == "delete":
        movies.unlink()
    else:
        (folder / vader._MANIFEST).write_text("{not json")
    with pytest.warns(UserWarning, match=r"is damaged .* rebuilding it"):
        assert vader.fetch_vader(cache) == folder
    assert movies.read_bytes() == SNIPPETS[movies.name]
