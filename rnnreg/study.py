"""The main job as a library function: plan an ablation, run it, report it, write the outputs.

``rnnreg ablate`` is this module behind a parser. From Python::

    from rnnreg.study import ablate

    result = ablate("movies", seeds=5, out="runs/ablate-movies")
    print(result.answer)

Everything a command could get wrong is checked before anything is written — the plan, the workers and threads,
the executor, the metric, whether every split the study uses holds enough examples of at least two classes, and
whether ``out`` already holds runs of other data — so a refused call leaves ``out`` exactly as it found it. Then
the folder is locked, its manifest written, the runs trained (finished runs are read back from ``runs.jsonl``), and
``summary.csv/json/md`` and the plots written beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnreg import report as rep
from rnnreg.ablation import Plan, RunTask, build_plan, check_splits, data_fingerprint, tasks_for
from rnnreg.config import Experiment, apply_overrides
from rnnreg.data import Corpus, load_corpus
from rnnreg.fsio import OutputLock
from rnnreg.outputs import write_outputs
from rnnreg.sweep import RunStore, check_executor, check_manifest, refuse_other_data, split_cores, sweep


@dataclass(frozen=True)
class StudyResult:
    """What :func:`ablate` found and wrote."""

    report: rep.Report
    out: Path
    files: tuple[str, ...]  # written in ``out`` beside runs.jsonl
    ran: int  # runs trained by this call
    reused: int  # runs read back from runs.jsonl
    failed: tuple[dict[str, Any], ...]  # records of this plan's failed or diverged runs
    problems: tuple[str, ...]  # damaged lines of runs.jsonl, skipped

    @property
    def answer(self) -> str:
        """The report's one-sentence answer."""
        return rep.answer(self.report)

    def render(self) -> str:
        """The terminal report: tables, verdicts and the answer."""
        return rep.render_text(self.report)


@dataclass(frozen=True)
class Study:
    """A checked, ready-to-run ablation; nothing is written until :meth:`run`."""

    plan: Plan
    corpus: Corpus
    tasks: tuple[RunTask, ...]
    fingerprint: str
    metric: str
    min_effect: float
    out: Path
    force: bool = False
    # executor, workers, threads, address, progress, on_record: passed to rnnreg.sweep.sweep as they are
    sweep_options: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "data": self.corpus.describe()}

    @property
    def store(self) -> RunStore:
        return RunStore(self.out)

    def describe(self) -> list[str]:
        """What is about to run, in two lines."""
        split = "one split" if self.plan.fixed_split else "train/validation redrawn per seed"
        return [
            f"data: {self.corpus.describe()}",
            f"ablate: {len(self.plan.variants)} variants + the linear reference, {len(self.plan.seeds)} seeds = "
            f"{len(self.tasks)} runs ({split}, test split fixed); results in {self.out}",
        ]

    def finished(self) -> int:
        """Runs of this plan already in ``out/runs.jsonl`` (read only)."""
        keys = {t.key for t in self.tasks}
        return len(self.store.load().records.keys() & keys)

    def run(self) -> StudyResult:
        """Lock ``out``, write the manifest, train what is missing, report, write the outputs."""
        with OutputLock(self.out):
            check_manifest(self.out, self.manifest, force=self.force)
            result = sweep(
                list(self.tasks),
                self.corpus,
                self.store,
                **self.sweep_options,
            )
            keys = {(t.variant, t.seed): t.key for t in self.tasks}
            report = rep.build_report(
                self.plan,
                result.records,
                keys,
                data=self.corpus.describe(),
                metric=self.metric,
                y_test=[label for _, label in self.corpus.test] or None,
                num_classes=self.corpus.num_classes,
                min_effect=self.min_effect,
            )
            files = write_outputs(report, rep.curves(self.plan, keys, result.records), self.out)
        return StudyResult(
            report, self.out, tuple(files), result.ran, result.reused, tuple(result.failed), tuple(result.problems)
        )


def default_out(experiment: Experiment) -> Path:
    """``runs/ablate-<data>``: the folder a study writes to when none is given."""
    return Path("runs") / f"ablate-{Path(experiment.data.source).stem}"


def plan_study(
    data: str | None = None,
    *,
    base: Experiment | None = None,
    overrides: Sequence[str] = (),
    preset: str = "default",
    variants: Sequence[Sequence[str]] = (),
    seeds: int = 5,
    max_epochs: int | None = None,
    fixed_split: bool = False,
    metric: str | None = None,
    min_effect: float = 0.01,
    out: str | Path | None = None,
    force: bool = False,
    executor: str = "process",
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    progress: bool | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> Study:
    """Check every argument and the data; return the :class:`Study` to run. Writes nothing.

    Args:
        data: a dataset name (:func:`rnnreg.data.list_datasets`) or a .csv/.tsv/.jsonl file; None keeps
            ``base.data.source``.
        base: the regularized settings every variant starts from (default: :class:`Experiment`'s defaults).
        overrides: ``"section.field=value"`` strings applied to ``base`` (as ``rnnreg keys`` lists them).
        preset: ``default`` | ``notebook`` | ``full`` | ``none`` (:data:`rnnreg.ablation.PRESETS`).
        variants: variants of your own, each ``[name, "key=value", ...]``, compared with the baseline.
        seeds: paired seeds per variant (verdicts need 3).
        max_epochs: cap on epochs per run (``train.epochs``); runs stop earlier by ``train.patience``.
        fixed_split: keep one train/validation split for every seed (default: redrawn per seed).
        metric: a key of :data:`rnnreg.report.METRICS` (default: ``test_acc``, or ``val_acc`` without a test split).
        min_effect: the smallest difference worth detecting (raised to one example of the evaluation split).
        out: the output folder (default: ``runs/ablate-<data>``); finished runs in it are reused.
        force: use an ``out`` that holds runs of other data (nothing is deleted).
        executor, workers, threads, address: how runs are spread (see :func:`rnnreg.sweep.sweep`).
        progress: a progress bar over the runs (default: when stdout is a terminal).
        on_record: called with each new run record as it finishes.
    Raises:
        ValueError, TypeError: an argument or the data that cannot give an answer, with the value and the fix.
    """
    sets = [f"data.source={data}"] if data is not None else []
    experiment = apply_overrides(base or Experiment(), [*sets, *overrides])
    plan = build_plan(preset, experiment, variants, seeds=seeds, fixed_split=fixed_split, epochs=max_epochs)
    split_cores(workers, 1, threads=threads)
    check_executor(executor, address)
    if isinstance(min_effect, bool) or not isinstance(min_effect, (int, float)) or not min_effect >= 0:
        raise ValueError(f"min_effect must be a number >= 0 (got {min_effect!r}); e.g. 0.01 for one point")
    if metric is not None and metric not in rep.METRICS:
        raise ValueError(f"metric must be one of {', '.join(rep.METRICS)} (got {metric!r})")
    corpus = load_corpus(experiment.data)
    metric = metric or ("test_acc" if corpus.test else "val_acc")
    check_splits(corpus, metric=metric)
    evaluation = corpus.test if metric.startswith("test") else corpus.val
    folder = Path(out) if out is not None else default_out(experiment)
    fingerprint = data_fingerprint(corpus)
    refuse_other_data(folder, {"fingerprint": fingerprint, "data": corpus.describe()}, force=force)
    options: dict[str, Any] = {
        "executor": executor,
        "workers": workers,
        "threads": threads,
        "address": address,
        "progress": progress,
        "on_record": on_record,
    }
    return Study(
        plan=plan,
        corpus=corpus,
        tasks=tuple(tasks_for(plan, experiment, fingerprint)),
        fingerprint=fingerprint,
        metric=metric,
        # One example of the evaluation split is the smallest difference it can show.
        min_effect=max(float(min_effect), 1 / len(evaluation)) if evaluation else float(min_effect),
        out=folder,
        force=force,
        sweep_options=options,
    )


def ablate(data: str | None = None, **options: Any) -> StudyResult:
    """Run the main job: each variant on the same seeds beside a linear reference; arguments: :func:`plan_study`.

    Returns the report and what was written; ``result.answer`` is the one-sentence answer.
    """
    return plan_study(data, **options).run()


def failure_line(record: dict[str, Any]) -> str:
    """One line for a failed run: which, and why."""
    why = record.get("error") or record.get("status", "failed")
    return f"run failed: {record.get('variant', '?')}, seed {record.get('seed', '?')}: {why}"


__all__ = ["Study", "StudyResult", "ablate", "default_out", "failure_line", "plan_study"]
