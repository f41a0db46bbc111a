"""Collects each train_step benchmark's median (and what ran in low precision) and prints the target ratios."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

# torch's own default (one thread per physical core), read before any test fixture changes it.
DEFAULT_THREADS = torch.get_num_threads()


@dataclass
class StepRecord:
    median_s: float
    low_precision: list[str]  # modules whose output was bf16/fp16 (rnnreg.step.probe_autocast); [] for fp32


RECORDS = pytest.StashKey[dict[str, StepRecord]]()

# (numerator, denominator, target): reported against the target, never asserted (timings belong to the machine).
TARGETS = (
    ("regularized_fp32", "notebook_packed_fp32", 0.25),
    ("regularized_bf16", "notebook_packed_fp32", 0.12),
    ("regularized_fp32", "unregularized_fp32", 1.10),
)


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    """Overrides the test suite's one-thread setting: a training step is timed as users run it, on every core."""
    torch.set_num_threads(DEFAULT_THREADS)


@pytest.fixture(scope="session")
def record_step(pytestconfig: pytest.Config) -> Callable[[str, float, list[str]], None]:
    """``record_step(case, median_s, low_precision_modules)``, for the summary printed after the run."""
    records = pytestconfig.stash.setdefault(RECORDS, {})

    def record(case: str, median_s: float, low_precision: list[str]) -> None:
        records[case] = StepRecord(median_s, low_precision)

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    records = config.stash.get(RECORDS, {})
    if not records:
        return
    terminalreporter.section(f"train_step medians and target ratios ({DEFAULT_THREADS} threads)")
    for name, record in records.items():
        low = ", ".join(record.low_precision) or "none"
        terminalreporter.write_line(f"{name:<26} {record.median_s * 1e3:9.1f} ms   low-precision modules: {low}")
    for num, den, target in TARGETS:
        if num in records and den in records:
            ratio = records[num].median_s / records[den].median_s
            verdict = "meets" if ratio <= target else "MISSES"
            terminalreporter.write_line(f"{num} / {den} = {ratio:.3f} ({verdict} target <= {target})")
