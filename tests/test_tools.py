"""The developer tools under tools/: the mutation scope's copy of pyproject.toml and the README's bench tables."""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_a_scope_replaces_only_the_mutmut_table() -> None:
    scope = tool("mutation_scope")
    original = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    text = scope.with_scope((ROOT / "pyproject.toml").read_text("utf-8"), scope.scope_table("harness"))
    copied = tomllib.loads(text)
    harness = tomllib.loads((ROOT / "tools" / "mutation-scopes.toml").read_text("utf-8"))["harness"]
    assert copied["tool"]["mutmut"] == harness
    assert "rnnreg/stats.py" in harness["only_mutate"] and "type_check_command" not in harness
    copied["tool"].pop("mutmut"), original["tool"].pop("mutmut")
    assert copied == original  # every other table as it was


def test_an_unknown_scope_is_refused_with_the_known_ones() -> None:
    with pytest.raises(SystemExit, match=r"no mutation scope 'core'.*choose one of harness"):
        tool("mutation_scope").scope_table("core")


def test_the_bench_tables_show_the_rows_ratios_and_goal_verdicts(tmp_path: Path) -> None:
    def row(name: str, group: str, asked: str, ms: float, floor: float | None = None) -> dict[str, object]:
        return {
            "name": name, "group": group, "device": "cpu", "precision": asked, "asked": asked, "rnn_dtype": asked,
            "low_precision": [], "batch_size": 64, "seq_len": 34, "tokens": 2000, "median_ms": ms, "q1_ms": ms,
            "q3_ms": ms, "cpu_ms": ms, "repeats": 5, "tokens_per_s": 1.0, "gflop": 1.0, "gflops_per_s": 1.0,
            "peak_fraction": 0.5, "ratio_vs_floor": None if floor is None else ms / floor, "cpu": "X",
        }  # fmt: skip

    rows = [row("floor", "main", "fp32", 40.0), row("rnnreg_train", "main", "fp32", 38.0, 40.0)]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(rows), "utf-8")
    records, machine = tool("bench_tables").records(path)
    assert machine == {"cpu": "X"}
    assert tool("bench_tables").main_table(records)[2] == "| `main` step, 64 x 34 | 40.0 ms | 38.0 ms (0.950x) |"
    goals = "\n".join(tool("bench_tables").goal_table(records))
    line = "| main job step (defaults, p90 bucketed batch) / floor, fp32 | <= 1.0 | 0.950 meets | 0.950 meets |"
    assert line in goals.splitlines()
