"""The speed goals: each a ratio of two rows of one run, from wall and from CPU times, with its verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rnnreg.bench.records import Record
from rnnreg.bench.workloads import AMP, MAIN_MODEL


@dataclass(frozen=True)
class Goal:
    what: str
    target: float
    compare: str  # "<=": value <= target; ">=": value >= target; "|x|<=": abs(value) <= target
    value: float | None  # from median wall times; None: not measured in this run
    cpu_value: float | None = None  # the same from median CPU times of the process (less disturbed when shared)

    def _met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        if self.compare == "|x|<=":
            return abs(value) <= self.target
        return value >= self.target if self.compare == ">=" else value <= self.target

    @property
    def met(self) -> bool | None:
        return self._met(self.value)

    def describe(self, *, cpu: bool = True) -> str:
        """One line: what, target, the wall-time ratio with its verdict and (``cpu``) the CPU-time one."""

        def shown(value: float | None) -> str:
            verdict = {True: "meets", False: "MISSES", None: "not measured"}[self._met(value)]
            return f"     - {verdict}" if value is None else f"{value:6.3f} {verdict:<6}"

        target = f"|x| <= {self.target}" if self.compare == "|x|<=" else f"{self.compare} {self.target}"
        line = f"{self.what:<56} {target:<11} wall {shown(self.value):<13}"
        return line + f" cpu {shown(self.cpu_value)}" if cpu else line


Timed = dict[tuple[str, str], tuple[float, float | None]]  # (name, precision asked) -> (wall ms, CPU ms or None)


def goals(records: Sequence[Record]) -> list[Goal]:
    """The issue's speed goals from this run's rows (see :func:`goals_from`)."""

    def timed(*groups: str) -> Timed:
        return {(r.name, r.asked): (r.median_ms, r.cpu_ms) for r in records if r.group in groups}

    shapes = sorted({(r.group, r.batch_size, r.seq_len) for r in records if r.group in ("length", "batch")})
    sweeps = [
        {(r.name, r.asked): (r.median_ms, r.cpu_ms) for r in records if (r.group, r.batch_size, r.seq_len) == shape}
        for shape in shapes
    ]
    return goals_from(timed("step"), timed("epoch"), main=timed("main"), main_epoch=timed("mainep"), sweeps=sweeps)


def _ratio(rows: Timed, a: tuple[str, str], b: tuple[str, str]) -> tuple[float | None, float | None]:
    """(wall, CPU) time of row ``a`` over row ``b``; None where a row or a CPU time is missing."""
    if a not in rows or b not in rows:
        return None, None
    (wall_a, cpu_a), (wall_b, cpu_b) = rows[a], rows[b]
    return wall_a / wall_b, cpu_a / cpu_b if cpu_a and cpu_b else None


def _mixed_precision_gap(rows: Timed, name: str, precision: str) -> list[float | None] | None:
    """``name``'s precision/fp32 ratio minus the floor's, from wall and CPU times; None without the rows."""
    model = _ratio(rows, (name, precision), (name, "fp32"))
    floor = _ratio(rows, ("floor", precision), ("floor", "fp32"))
    if model[0] is None or floor[0] is None:
        return None
    return [a - b if a is not None and b is not None else None for a, b in zip(model, floor, strict=True)]


def goals_from(
    step: Timed,
    epoch: Timed,
    *,
    main: Timed | None = None,
    main_epoch: Timed | None = None,
    sweeps: Sequence[Timed] = (),
) -> list[Goal]:
    """The speed goals, each a ratio of two timings of one run (never across runs), from wall and CPU times.

    ``step`` and ``epoch``: the goals' shape and the bucketing epochs; ``main`` and ``main_epoch``: the main job's
    step and epoch (the default model against the floor, :data:`MAIN_MODEL`); ``sweeps``: one ``Timed`` per shape
    of the length and batch sweeps, of which the worst regularized / floor ratio counts.
    "Length bucketing >= 30 % faster per epoch" is read as a speed-up: random-batching time / bucketed time
    >= 1.30 (an epoch in <= 0.77 of the time).
    """
    main, main_epoch = main or {}, main_epoch or {}
    out = []
    for precision in [p for p in AMP if ("floor", p) in step]:
        wall, cpu = _ratio(step, ("regularized", precision), ("floor", precision))
        out.append(Goal(f"regularized step / kernel floor, {precision}", 0.85, "<=", wall, cpu))
    for precision in ("bf16", "fp16"):
        gap = _mixed_precision_gap(step, "regularized", precision)
        if gap is not None:
            out.append(Goal(f"{precision}/fp32 ratio: regularized minus floor", 0.05, "|x|<=", *gap))
    wall, cpu = _ratio(step, ("regularized", "fp32"), ("unregularized", "fp32"))
    out.append(Goal("regularization overhead (all *_p > 0 / all 0), fp32", 1.05, "<=", wall, cpu))
    wall, cpu = _ratio(epoch, ("epoch_random", "fp32"), ("epoch_bucketed", "fp32"))
    out.append(Goal("epoch speed-up of length bucketing (random / bucketed)", 1.30, ">=", wall, cpu))
    for precision in [p for p in AMP if ("floor", p) in main] or ["fp32"]:
        wall, cpu = _ratio(main, (MAIN_MODEL, precision), ("floor", precision))
        out.append(Goal(f"main job step (defaults, p90 bucketed batch) / floor, {precision}", 1.0, "<=", wall, cpu))
    for precision in [p for p in AMP if ("floor", p) in main_epoch] or ["fp32"]:
        wall, cpu = _ratio(main_epoch, (MAIN_MODEL, precision), ("floor", precision))
        out.append(Goal(f"main job epoch (same bucketed batches) / floor, {precision}", 1.0, "<=", wall, cpu))
    for precision in ("bf16", "fp16"):
        gap = _mixed_precision_gap(main_epoch, MAIN_MODEL, precision)
        if gap is not None:
            out.append(Goal(f"{precision}/fp32 ratio, main job epoch: rnnreg minus floor", 0.05, "|x|<=", *gap))
    for precision in [p for p in AMP if any(("floor", p) in rows for rows in sweeps)] or ["fp32"]:
        pairs = [_ratio(rows, ("regularized", precision), ("floor", precision)) for rows in sweeps]
        walls = [w for w, _ in pairs if w is not None]
        cpus = [c for _, c in pairs if c is not None]
        worst = (max(walls) if walls else None, max(cpus) if cpus else None)
        out.append(Goal(f"worst regularized / floor over the length and batch sweeps, {precision}", 1.0, "<=", *worst))
    return out
