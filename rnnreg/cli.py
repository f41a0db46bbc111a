"""`rnnreg` command line: one parser per command, each calling the library and printing what it returns.

The main job lives in :mod:`rnnreg.study`, checkpoint evaluation in :func:`rnnreg.fit.evaluate_checkpoint`; the
library validates every value and names parameters and config keys in its errors, which :func:`main` prints in
one line (with the flag where the library names a parameter the CLI spells differently).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import re
import shlex
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnreg.allocator import keep_freed_memory
from rnnreg.config import Experiment, TrainConfig, apply_overrides, valid_keys

if TYPE_CHECKING:
    from rnnreg.fit import EpochRecord

    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _add_data_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument(
        "--data",
        required=required,
        help="a dataset name (see `rnnreg datasets`) or a .csv/.tsv/.jsonl file",
    )
    p.add_argument("--text-col", help="column holding the text (default: text)")
    p.add_argument("--label-col", help="column holding the label (default: label)")


def _data_overrides(args: argparse.Namespace) -> list[str]:
    sets = []
    if args.data is not None:
        sets.append(f"data.source={args.data}")
    if args.text_col is not None:
        sets.append(f"data.text_col={args.text_col}")
    if args.label_col is not None:
        sets.append(f"data.label_col={args.label_col}")
    return sets


def _add_notebook(sub: _Subparsers) -> None:
    p = sub.add_parser("notebook", help="replay the user's notebook through rnnreg and say what it got wrong")
    p.add_argument("--seeds", type=int, default=20, help="seeds for the mini-challenge re-run (default: 20)")


def _add_ablate(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "ablate",
        help="the main job: baseline vs regularized vs each trick left out, over paired seeds, with verdicts",
        description="Trains every variant of a preset (and your own --variant) on the same seeds, beside a linear "
        "reference, and reports means with 95% CIs, paired differences, Holm-corrected p-values and a verdict per "
        "comparison. The same command again resumes: finished runs are read from --out/runs.jsonl.",
    )
    _add_data_args(p)
    p.add_argument("--preset", default="default", help="default | notebook | full | none (default: default)")
    p.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME KEY=VALUE",
        help="a variant of your own: a name, then --set style overrides of the regularized settings; repeatable",
    )
    p.add_argument("--seeds", type=int, default=5, help="paired seeds per variant (default: 5; verdicts need 3)")
    p.add_argument(
        "--max-epochs",
        "--epochs",
        dest="epochs",
        type=int,
        help=f"cap on epochs per run (train.epochs, default {TrainConfig.epochs}); a run stops earlier once validation "
        f"macro-F1 has not improved for train.patience ({TrainConfig.patience}) epochs",
    )
    p.add_argument("--workers", type=int, help="parallel runs (default: one per core)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--executor", default="process", help="process (default) or ray")
    p.add_argument("--address", help="an existing Ray cluster, host:port (with --executor ray)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/ablate-<data>)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override a setting")
    p.add_argument("--fixed-split", action="store_true", help="keep one train/validation split for every seed")
    p.add_argument(
        "--metric",
        help="test_acc (default), test_f1, val_acc, val_f1, or a mechanism: val_ece, val_nll (lower is better); "
        "val_acc without a test split",
    )
    p.add_argument(
        "--min-effect",
        type=float,
        default=0.01,
        help="smallest difference worth detecting (default: 0.01, or one example of the evaluation split if larger)",
    )
    p.add_argument("--force", action="store_true", help="use an --out that holds runs of other data")


def _add_train(sub: _Subparsers) -> None:
    p = sub.add_parser("train", help="train one model; writes model.pt, last.pt and metrics.json to --out")
    _add_data_args(p)
    p.add_argument(
        "--max-epochs",
        "--epochs",
        dest="epochs",
        type=int,
        help=f"cap on training epochs (train.epochs, default {TrainConfig.epochs}); stops earlier by train.patience",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, dropout and batch order")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override a setting")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<dataset>-seed<seed>)")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from --out/last.pt (exit 2 if none)"
    )


def _add_evaluate(sub: _Subparsers) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint written by `rnnreg train`")
    p.add_argument("checkpoint", type=Path)
    _add_data_args(p, required=True)
    p.add_argument(
        "--split",
        choices=("test", "val", "train", "all"),
        help="which part of --data (default: test for a named dataset, all of a file)",
    )


def _add_check(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "check",
        help="run the invariant checks on your own model and functions; prints PASS/FAIL/WARN/SKIP/NOT RUN",
        description="FACTORY is MODULE:ATTR or path/file.py:ATTR, a zero-argument callable returning a model "
        "with forward(tokens[B,T] int64, lengths[B] int64) -> logits[B,C] (other conventions: --call). "
        "Exit 1 on any FAIL; WARN, SKIP (the check does not apply) and NOT RUN (torch cannot run the check here) do "
        "not fail; exit 2 on a usage error.",
    )
    p.add_argument("factory", nargs="?", metavar="MODULE:FACTORY", help="zero-argument model factory")
    p.add_argument("--loss", metavar="MODULE:FUNCTION", help="loss_fn(logits, targets, smoothing)")
    p.add_argument("--clip", metavar="MODULE:FUNCTION", help="clip_fn(parameters, max_norm) -> pre-clip norm")
    p.add_argument("--optimizer", metavar="MODULE:FUNCTION", help="make_optimizer(params, lr, weight_decay)")
    decay = p.add_mutually_exclusive_group()
    decay.add_argument("--decoupled", dest="decoupled", action="store_true", default=None, help="AdamW-style decay")
    decay.add_argument("--coupled", dest="decoupled", action="store_false", help="L2 added to the gradient")
    p.add_argument(
        "--train-step", metavar="MODULE:FUNCTION", help="train_step(model, batch, optimizer, scaler, max_norm)"
    )
    p.add_argument("--call", metavar="MODULE:FN", help="call(model, tokens, lengths) -> logits, for other conventions")
    p.add_argument("--groups", metavar="MODULE:FN", help="make_optimizer(model) -> optimizer: checks decay groups")
    p.add_argument(
        "--expect-decay",
        action="store_const",
        const=True,
        help="with --groups: you configured a weight decay, so groups in which nothing decays fail",
    )
    p.add_argument("--locked-dropout", metavar="MODULE:FACTORY", help="zero-argument factory of a locked dropout")
    p.add_argument("--embedding-dropout", metavar="MODULE:FACTORY", help="factory of layer(tokens) -> embeddings")
    p.add_argument("--weight-drop", metavar="MODULE:FACTORY", help="factory of an RNN with weight drop")
    p.add_argument("--layer-p", type=float, help="the dropout probability the layer factories build with, 0 < p < 1")
    p.add_argument(
        "--input-size",
        type=int,
        metavar="N",
        help="the input width of the --weight-drop module (default: its RNN's input_size; give it after a projection)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--junit", type=Path, metavar="FILE", help="also write the results as JUnit XML (for CI)")
    p.add_argument(
        "--vocab-size",
        type=int,
        help="token ids are drawn below it (default: the size of the model's token nn.Embedding or nn.EmbeddingBag)",
    )
    p.add_argument("--num-classes", type=int, help="labels of the test batch are drawn below it (default: 2)")
    p.add_argument("--seed", type=int, default=0)


def _add_bench(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "bench",
        help="time the training step: fp32 vs mixed precision, against the fastest fused LSTM kernel",
        description="Times rnnreg's own train_step (regularized and plain model, fp32 and bf16/fp16 autocast), the "
        "notebook's packed model and a plain padded nn.LSTM (the kernel floor) on one batch, round-robin; cost "
        "growth over length and batch size; one epoch with and without length bucketing. Ratios compare rows of "
        "one run; never compare runs.",
    )
    p.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats (< 1 min on 2 cores)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the rows as a JSON list")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="plot step time against length and batch size")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    p.add_argument("--batch-size", type=int, metavar="B", help="batch size (default: 64; --quick 32)")
    p.add_argument("--seq-len", type=int, metavar="T", help="padded length, lengths T/2..T (default: 128; --quick 64)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: cores free of load)")
    p.add_argument("--repeats", type=int, metavar="N", help="timed steps per row (default: 10; --quick 3)")
    p.add_argument("--data", default="movies", help="data set of the epoch rows (default: movies; 'none' skips them)")


def _add_datasets(sub: _Subparsers) -> None:
    sub.add_parser("datasets", help="list the built-in datasets")


def _add_keys(sub: _Subparsers) -> None:
    sub.add_parser("keys", help="list every SECTION.FIELD that --set accepts, with its default")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnreg",
        description="Regularized RNN text classifiers, with checks that each regularizer does what it claims.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_notebook(sub)
    _add_ablate(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_check(sub)
    _add_bench(sub)
    _add_datasets(sub)
    _add_keys(sub)
    return parser


def _fail(message: str, code: int = 2) -> int:
    print(f"rnnreg: error: {message}", file=sys.stderr)
    return code


def _cmd_notebook(args: argparse.Namespace) -> int:
    import torch

    from rnnreg import notebook

    torch.set_num_threads(1)  # batches of 4 sentences: extra threads only add synchronisation
    notebook.replay(print, seeds=args.seeds)
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from rnnreg.study import failure_line, plan_study

    # Everything is checked before anything is written: a refused command leaves --out as it found it.
    study = plan_study(
        base=apply_overrides(Experiment(), _data_overrides(args)),
        overrides=args.set,
        preset=args.preset,
        variants=args.variant,
        seeds=args.seeds,
        max_epochs=args.epochs,
        fixed_split=args.fixed_split,
        metric=args.metric,
        min_effect=args.min_effect,
        out=args.out,
        force=args.force,
        executor=args.executor,
        workers=args.workers,
        threads=args.threads,
        address=args.address,
    )
    for line in study.describe():
        print(line)
    try:
        with _stop_on_signals():
            result = study.run()
    except _Signalled as stop:
        name = signal.Signals(stop.signum).name
        print(
            f"rnnreg: stopped by {name}; {study.finished()} finished run(s) are kept in {study.store.path}: the same "
            "command resumes from there",
            file=sys.stderr,
        )
        return 128 + stop.signum  # 130 for SIGINT, 143 for SIGTERM
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)
    print()
    print(result.render())
    print(
        f"\n{result.ran} run(s) trained now, {result.reused} reused; wrote {', '.join(result.files)}, runs.jsonl in "
        f"{result.out}"
    )
    failed = [r for r in result.failed if r["status"] == "failed"]
    for record in failed:
        print(failure_line(record), file=sys.stderr)
    if failed:
        print(f"rnnreg: {len(failed)} run(s) failed; the same command retries them", file=sys.stderr)
    return 1 if failed else 0


def _format_mechanisms(m: dict[str, Any]) -> str:
    """One line: what each trick did in this run (rnnreg.mechanisms)."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    return (
        f"mechanisms: clipping acted on {pct(m['clip_rate'])} of steps (|grad| median {num(m['grad_norm_median'])}, "
        f"p90 {num(m['grad_norm_p90'])}); decay shrank weights by {pct(m['decay_shrink'])}; dropout: loss gap "
        f"{num(m['dropout_loss_gap'])} nats, accuracy gap train - val {num(m['gen_gap'])}; val ECE "
        f"{num(m['val_ece'])}, mean max p {num(m['val_mean_max_prob'])}, NLL {num(m['val_nll'])}"
    )


def _format_epoch(record: EpochRecord, epochs: int) -> str:
    line = (
        f"epoch {record.epoch:>3}/{epochs}  train loss {record.train_loss:.4f}  acc {record.train_acc:.3f}"
        f"  |grad| {record.grad_norm:.3g}"
    )
    if record.val is not None:
        line += f"  val acc {record.val.accuracy:.3f}  macro-F1 {record.val.macro_f1:.3f}"
    if record.skipped:
        line += f"  skipped {record.skipped}"
    return line + f"  ({record.seconds:.1f}s)"


class _Signalled(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`_Signalled` for the block; the previous handlers come back after it."""

    def handler(signum: int, _frame: object) -> None:
        raise _Signalled(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _resume_command(argv: Sequence[str], out_dir: Path) -> str:
    """The user's own command with ``--out`` made explicit and ``--resume`` added."""
    argv = list(argv)
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(out_dir)]
    if "--resume" not in argv:
        argv.append("--resume")
    return "rnnreg " + shlex.join(argv)


def _cmd_train(args: argparse.Namespace) -> int:
    from rnnreg.fit import TrainingDiverged, fit, prepare, read_checkpoint
    from rnnreg.fsio import OutputLock, remove_temp_files
    from rnnreg.mechanisms import inert

    sets = _data_overrides(args) + list(args.set)
    if args.epochs is not None:
        sets.append(f"train.epochs={args.epochs}")
    experiment = apply_overrides(Experiment(), sets)
    out_dir = args.out or Path("runs") / f"{Path(experiment.data.source).stem}-seed{args.seed}"
    last = out_dir / "last.pt"
    if args.resume and not last.is_file():
        return _fail(f"--resume: nothing to resume, {last} does not exist; run without --resume to start afresh")
    data = prepare(experiment.data)
    print(f"data: {data.corpus.describe()}; vocabulary {len(data.vocab)} (built on the training split)")
    m, t = experiment.model, experiment.train
    probs = ", ".join(f"{name}={getattr(m, name)}" for name in m.dropout_fields())
    print(
        f"model: {m.arch} {m.rnn} x{m.num_layers} {'bi' if m.bidirectional else 'uni'}directional, "
        f"embed {m.embed_dim}, hidden {m.hidden_dim}, pooling {m.pooling}; {probs}"
    )
    print(
        f"train: {t.optimizer} lr={t.lr} weight_decay={t.weight_decay}, clip {t.clip}, "
        f"label_smoothing={t.label_smoothing}, amp={t.amp}, batch {t.batch_size}, seed {args.seed} -> {out_dir}"
    )

    def progress(record: EpochRecord) -> None:
        print(_format_epoch(record, t.epochs), flush=True)

    try:
        # The lock also proves --out writable before any training; a second run on the same --out is refused.
        with OutputLock(out_dir), _stop_on_signals():
            remove_temp_files(out_dir)  # left by a run that was killed mid-write; ours alone while we hold the lock
            result = fit(experiment, data, args.seed, out_dir=out_dir, resume=args.resume, progress=progress)
    except _Signalled as stop:
        name = signal.Signals(stop.signum).name
        if last.is_file():  # every write is atomic: last.pt is the last complete epoch, whenever the signal came
            epoch = read_checkpoint(last, "training")["epoch"]
            kept = f"{last} holds epoch {epoch}; continue with: {_resume_command(args.argv, out_dir)}"
        else:
            kept = "no epoch had finished, so there is nothing to resume"
        print(f"rnnreg: stopped by {name}; {kept}", file=sys.stderr)
        return 128 + stop.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    except TrainingDiverged as e:
        return _fail(str(e), 1)
    except OSError as e:
        code = errno.errorcode.get(e.errno or 0, "error")
        return _fail(
            f"writing to {out_dir} failed: {e.strerror or e} ({code}); files already there are intact (each is "
            "replaced only when its new version is complete); free space or fix the disk, then rerun with --resume",
            1,
        )
    h = result.history
    if t.amp != "off":
        ran = ", ".join(h.low_precision) or "nothing"
        print(f"amp: asked {t.amp}, ran {h.amp} (low precision in: {ran})")
    if h.best_val_f1 is not None:
        best = f"val macro-F1 {h.best_val_f1:.4f}"
    else:
        best = f"lowest training loss {-h.best_score:.4f} (no validation split)"
    print(f"best epoch {h.best_epoch}: {best}; skipped steps {h.skipped_steps}")
    if h.truncated:
        print(
            f"warning: cut before convergence: validation was still improving at epoch {len(h.epochs)} of "
            f"{t.epochs}; raise --max-epochs",
            file=sys.stderr,
        )
    elif h.stopped_early:
        on = "validation macro-F1" if h.selected_on == "val_macro_f1" else "training loss"
        print(f"stopped: no better {on} for {t.patience} epochs (converged)")
    print(_format_mechanisms(result.mechanisms))
    print(_format_time_split(h.seconds))
    for reason in inert(result.mechanisms, experiment).values():
        print(f"inert at these settings: {reason}")
    if result.test is not None:
        print(f"test: accuracy {result.test.accuracy:.4f}, macro-F1 {result.test.macro_f1:.4f} (n={result.test.n})")
    print(f"wrote {out_dir / 'model.pt'}, {out_dir / 'last.pt'}, {out_dir / 'metrics.json'}")
    return 0


def _format_time_split(seconds: dict[str, float]) -> str:
    from rnnreg.fit import time_split

    parts = time_split(seconds)
    total = sum(parts.values())
    shown = ", ".join(f"{part} {value:.1f} s ({value / total:.0%})" for part, value in parts.items() if total > 0)
    return f"time in fit: {total:.1f} s: {shown}"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rnnreg.fit import evaluate_checkpoint

    e = evaluate_checkpoint(args.checkpoint, _data_overrides(args), split=args.split)
    m = e.metrics
    print(
        f"{args.checkpoint} on {e.source} [{e.split}] (n={m.n}): accuracy {m.accuracy:.4f}, macro-F1 {m.macro_f1:.4f}"
    )
    print(json.dumps(dataclasses.asdict(m)))
    return 0


# rnnreg.testing names run_checks' parameters; `rnnreg check` says the option the user typed.
_CHECK_FLAGS = {
    "model_factory": "MODULE:FACTORY",
    "loss_fn": "--loss",
    "clip_fn": "--clip",
    "optimizer_factory": "--optimizer",
    "decoupled=True": "--decoupled",
    "decoupled=False": "--coupled",
    "train_step": "--train-step",
    "groups_fn": "--groups",
    "expect_decay": "--expect-decay",
    "locked_dropout": "--locked-dropout",
    "embedding_dropout": "--embedding-dropout",
    "weight_drop": "--weight-drop",
    "layer_p": "--layer-p",
    "input_size": "--input-size",
    "call": "--call",
    "vocab_size": "--vocab-size",
    "num_classes": "--num-classes",
}
# rnnreg.bench names BenchConfig's fields and the output paths; `rnnreg bench` says its options.
_BENCH_FLAGS = {
    "batch_size": "--batch-size",
    "seq_len": "--seq-len",
    "threads": "--threads",
    "repeats": "--repeats",
    "device 'cuda'": "--device cuda",  # as typed
    "device 'cpu'": "--device cpu",
    "device": "--device",
    "json path": "--json",
    "plot path": "--plot",
}


def _in_cli_words(message: str, words: dict[str, str] | None = None) -> str:
    """``message`` with each library word of ``words`` (default :data:`_FLAGS`) said as the CLI's option.

    Whole words only, and never inside a quoted path or a ``name=value`` / ``name(...)`` the message shows as code.
    """
    words = _FLAGS if words is None else words
    names = "|".join(map(re.escape, sorted(words, key=len, reverse=True)))  # the longest phrase wins
    return re.sub(rf"(?<![\w./'-])({names})(?![\w/'=(-])", lambda m: words[m.group(1)], message)


def _cmd_check(args: argparse.Namespace) -> int:
    from rnnreg.testing.results import summary, write_json, write_junit
    from rnnreg.testing.suite import check_arguments, load_object, run_checks

    given = {
        "model_factory": args.factory,
        "loss_fn": args.loss,
        "clip_fn": args.clip,
        "optimizer_factory": args.optimizer,
        "train_step": args.train_step,
        "groups_fn": args.groups,
        "locked_dropout": args.locked_dropout,
        "embedding_dropout": args.embedding_dropout,
        "weight_drop": args.weight_drop,
        "call": args.call,
    }
    options = {
        "decoupled": args.decoupled,
        "expect_decay": args.expect_decay,
        "layer_p": args.layer_p,
        "input_size": args.input_size,
        "vocab_size": args.vocab_size,
        "num_classes": args.num_classes,
    }
    try:
        check_arguments(**{k: v for k, v in given.items() if v}, **options)
    except ValueError as e:
        return _fail(_in_cli_words(str(e), _CHECK_FLAGS))
    objects = {key: load_object(spec) for key, spec in given.items() if spec}
    for key, obj in objects.items():
        if not callable(obj):
            return _fail(f"{given[key]} is a {type(obj).__name__}, not a callable; name a function or a class")
    rows = run_checks(**objects, **options, seed=args.seed)
    width = max(len(r.name) for r in rows)
    for r in rows:
        detail = r.detail.replace("\n", "\n" + " " * (width + 11))
        print(f"{r.name:<{width}}  {r.status:<7}  {detail}")
    counts = summary(rows)
    print(
        f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['WARN']} warned, {counts['SKIP']} skipped, "
        f"{counts['NOT RUN']} could not run"
    )
    if args.json:
        write_json(rows, args.json)
    if args.junit:
        write_junit(rows, args.junit)
    return 1 if counts["FAIL"] else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from rnnreg import bench

    try:
        cfg = bench.BenchConfig.defaults(
            quick=args.quick,
            device=args.device,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            threads=args.threads,
            repeats=args.repeats,
            epoch_data=None if args.data == "none" else args.data,
        )
        if args.data == "none":  # defaults() keeps its default for a None override; 'none' skips the epoch rows
            cfg = dataclasses.replace(cfg, epoch_data=None)
        if args.json is not None:
            bench.check_output_path(args.json, "json path")
        if args.plot is not None:
            bench.check_output_path(args.plot, "plot path", ".png")
    except ValueError as e:
        raise ValueError(_in_cli_words(str(e), _BENCH_FLAGS)) from None
    hardware = bench.probe_hardware(cfg.threads)
    for line in [*hardware.describe(), cfg.describe(), "", bench.TABLE_HEADER]:
        print(line)
    records = bench.run_benchmarks(
        cfg,
        hardware,
        progress=lambda rows: print("\n".join(bench.format_row(r) for r in rows), flush=True),
        note=lambda line: print(f"# {line}", flush=True),
    )
    print("\ngoals (ratios within this run):")
    for goal in bench.goals(records):
        print("  " + goal.describe())
    note = cfg.goal_note()
    if note is not None:
        print(f"  ({note})")
    if args.json is not None:
        bench.write_json(records, hardware, args.json)
        print(f"wrote {args.json}")
    if args.plot is not None:
        bench.plot(records, hardware, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _cmd_datasets(_args: argparse.Namespace) -> int:
    from rnnreg.data import list_datasets

    for name, description in list_datasets():
        print(f"{name:<10} {description}")
    return 0


def _cmd_keys(_args: argparse.Namespace) -> int:
    defaults = Experiment().to_dict()
    for key in valid_keys():
        section, name = key.split(".")
        print(f"{key:<28} {defaults[section][name]!r}")
    return 0


COMMANDS = {
    "ablate": _cmd_ablate,
    "notebook": _cmd_notebook,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "check": _cmd_check,
    "bench": _cmd_bench,
    "datasets": _cmd_datasets,
    "keys": _cmd_keys,
}


# What an interrupted command keeps, for the one line Ctrl-C prints (train and ablate catch it earlier themselves).
_RESUME_HINTS = {
    "train": "`rnnreg train --resume` with the same --out continues from the last finished epoch",
    "ablate": "the same `rnnreg ablate` command resumes: finished runs are kept in --out/runs.jsonl",
}

# Library errors name parameters; where the CLI spells one differently, the one-line error says the flag.
_FLAGS = {
    "another output folder": "another --out",
    "another out_dir": "another --out",
    "force=True": "--force",
    "executor='ray'": "--executor ray",
    "json path": "--json",
    "junit path": "--junit",
}


def main(argv: Sequence[str] | None = None) -> int:
    from rnnreg.data import DatasetUnavailableError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv  # for the resume command that `train` prints when it is stopped
    keep_freed_memory()  # every step reuses the pages the step before freed (rnnreg.allocator)
    warnings.simplefilter("default")  # show library warnings (a no-op regularizer, an amp that did not apply) once
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, DatasetUnavailableError) as e:
        if os.environ.get("RNNREG_DEBUG"):
            raise  # the full traceback, for bug reports
        return _fail(_in_cli_words(str(e)))
    except OSError as e:  # a file the command reads or writes: say which and why, in one line
        if os.environ.get("RNNREG_DEBUG"):
            raise
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e} ({errno.errorcode.get(e.errno or 0, 'OSError')})", 1)
    except KeyboardInterrupt:
        return _fail(f"interrupted; {_RESUME_HINTS.get(args.command, 'nothing was kept')}", 130)


if __name__ == "__main__":
    sys.exit(main())
