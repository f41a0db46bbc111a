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
    """``record_step(name, precision, median_s)`` for the goal ratios printed after the run."""
    timings = pytestconfig.stash.setdefault(TIMINGS, {})

    def record(name: str, precision: str, median_s: float) -> None:
        timings[(name, precision)] = median_s

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    timings = config.stash.get(TIMINGS, {})
    if not timings:
        return
    step = {key: (s * 1e3, None) for key, s in timings.items() if not key[0].startswith("epoch_")}
    epoch = {key: (s * 1e3, None) for key, s in timings.items() if key[0].startswith("epoch_")}
    hw = bench.probe_hardware(THREADS)
    terminalreporter.section(f"rnnreg goals ({THREADS} threads; medians of this run, cases timed one after another)")
    for line in hw.describe():
        terminalreporter.write_line(line)
    for goal in bench.goals_from(step, epoch):
        terminalreporter.write_line(goal.describe(cpu=False))
