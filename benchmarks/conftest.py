"""Collects each benchmark's median and prints the goal ratios of ``rnnreg.bench.goals_from`` after the run."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from rnnreg import bench

# The thread count `rnnreg bench` would pick (cores this process may use, less the load), read at start-up.
THREADS = bench.free_cores()

TIMINGS = pytest.StashKey[dict[tuple[str, str], float]]()


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    """Overrides the test suite's one-thread setting: a training step is timed as users run it."""
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def record_step(pytestconfig: pytest.Config) -> Callable[[str, str, float], None]:
    """``record_step(name, precision, median_s)`` for the goal ratios printed after the run; a name "main:x" or
    "mainep:x" is model x's row of the main job's step or epoch."""
    timings = pytestconfig.stash.setdefault(TIMINGS, {})

    def record(name: str, precision: str, median_s: float) -> None:
        timings[(name, precision)] = median_s

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    timings = config.stash.get(TIMINGS, {})
    if not timings:
        return
    groups: dict[str, bench.Timed] = {"step": {}, "epoch": {}, "main": {}, "mainep": {}}
    for (name, precision), seconds in timings.items():
        group, _, model = name.rpartition(":")  # "main:floor" -> the main job's rows; "floor" -> the goals' shape
        group = group or ("epoch" if name.startswith("epoch_") else "step")
        groups[group][(model, precision)] = (seconds * 1e3, None)
    hw = bench.probe_hardware(THREADS)
    terminalreporter.section(f"rnnreg goals ({THREADS} threads; medians of this run, cases timed one after another)")
    for line in hw.describe():
        terminalreporter.write_line(line)
    found = bench.goals_from(groups["step"], groups["epoch"], main=groups["main"], main_epoch=groups["mainep"])
    for goal in [g for g in found if "sweeps" not in g.what]:  # the sweeps' rows are not recorded here
        terminalreporter.write_line(goal.describe(cpu=False))
