"""rnnreg.cores: the cores a process may use and how many of them are free, for workers' and torch's threads."""

from __future__ import annotations

import pytest

from rnnreg import cores


@pytest.mark.parametrize(
    ("allowed", "cpus", "load", "free"),
    [
        (2, 2, 0.0, 2),  # an idle machine: every allowed core
        (2, 2, 1.0, 1),  # one core busy
        (2, 2, 1.4, 1),  # 0.6 idle rounds to 1
        (2, 2, 1.6, 1),  # 0.4 idle: never fewer than 1
        (2, 2, 5.0, 1),
        (4, 16, 3.0, 4),  # 13 idle on the machine, but this process may use 4
        (8, 8, 2.5, 6),  # 5.5 idle rounds half up
    ],
)
def test_free_cores_are_the_allowed_cores_less_the_load(
    monkeypatch: pytest.MonkeyPatch, allowed: int, cpus: int, load: float, free: int
) -> None:
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda _pid: set(range(allowed)), raising=False)
    monkeypatch.setattr(cores.os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(cores.os, "getloadavg", lambda: (load, load, load))
    assert cores.available_cores() == allowed
    assert cores.free_cores() == free


def test_without_an_affinity_mask_or_a_load_average_every_cpu_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(cores.os, "sched_getaffinity", raising=False)  # macOS

    def no_load() -> tuple[float, float, float]:
        raise OSError("no load average here")

    monkeypatch.setattr(cores.os, "getloadavg", no_load)
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 6)
    assert cores.available_cores() == 6 and cores.free_cores() == 6
