"""Print the mutation score of the last ``mutmut run``: per module, overall, and every mutant that was not killed.

Run from the repository root after ``mutmut run`` (``tox -e mutation`` does both). mutmut keeps one ``.meta`` file per
mutated module under ``mutants/`` with each mutant's exit code; this reads those files (mutmut is pinned in
constraints.txt, so the format is fixed) and maps exit codes to statuses with mutmut's own table.

Score = (killed + timeout + caught by type check) / (mutants - skipped): a mutant that hangs the suite is detected,
and one that mypy rejects (``type_check_command``; the suite runs mypy on rnnreg, ``tox -e type``) never passes CI.
Survivors, mutants no test reaches and mutants that were never run count against it. A score below ``--goal`` is
reported, not an error: the exit status is 0 whenever there are results to report, 2 when there are none.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

# "caught by type check": the mutant does not pass mypy, which the suite (tox -e type) runs on rnnreg in CI.
DETECTED = ("killed", "timeout", "caught by type check")
COLUMNS = ("killed", "timeout", "caught by type check", "survived", "no tests", "suspicious", "segfault", "not checked")


def _mutated_modules(root: Path) -> list[Path]:
    """The .py files mutmut mutates under this project's [tool.mutmut] config (source_paths x only_mutate)."""
    config = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))["tool"]["mutmut"]
    patterns = config.get("only_mutate", ["*"])
    excluded = config.get("do_not_mutate", [])
    files = sorted(p.relative_to(root) for src in config["source_paths"] for p in (root / src).rglob("*.py"))
    return [
        f
        for f in files
        if any(fnmatch.fnmatch(str(f), p) for p in patterns) and not any(fnmatch.fnmatch(str(f), p) for p in excluded)
    ]


def _status_table() -> dict[int | None, str]:
    from mutmut.stats import status_by_exit_code  # mutmut's own exit code -> status map

    return status_by_exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--goal", type=float, default=90.0, help="target score in percent (reported, not enforced)")
    parser.add_argument("--diff", action="store_true", help="print the diff of every surviving mutant")
    args = parser.parse_args(argv)

    root = Path.cwd()
    status_by_exit_code = _status_table()
    per_module: dict[str, Counter[str]] = {}
    not_killed: list[tuple[str, str]] = []  # (status, mutant name)
    for module in _mutated_modules(root):
        meta = root / "mutants" / f"{module}.meta"
        if not meta.exists():
            continue
        exit_codes: dict[str, int | None] = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        counts: Counter[str] = Counter()
        for name, code in exit_codes.items():
            status = status_by_exit_code[code]
            counts[status] += 1
            if status not in DETECTED:
                not_killed.append((status, name))
        per_module[str(module)] = counts
    if not per_module:
        print("no mutation results under mutants/: run `mutmut run` first", file=sys.stderr)
        return 2

    name_width = max(len(m) for m in per_module) + 2
    short = {"caught by type check": "mypy"}
    header = f"{'module':<{name_width}}" + "".join(f"{short.get(c, c):>12}" for c in ("mutants", *COLUMNS, "score"))
    print(header)
    print("-" * len(header))
    total: Counter[str] = Counter()
    for name, counts in per_module.items():
        total.update(counts)
        print(_row(name, counts, name_width))
    print("-" * len(header))
    print(_row("all", total, name_width))

    score = _score(total)
    detected = sum(total[s] for s in DETECTED)
    scored = sum(total.values()) - total["skipped"]
    verdict = "meets" if score >= args.goal else "is below"
    print(
        f"\nmutation score {score:.1f}% ({detected} of {scored} killed, timed out or caught by mypy): {verdict} the "
        f"{args.goal:g}% goal"
    )

    if not_killed:
        print(f"\n{len(not_killed)} mutants not killed (inspect one with `mutmut show NAME`):")
        for status, name in sorted(not_killed):
            print(f"  {status:<12} {name}")
            if args.diff and status == "survived":
                print(_indent(_diff(name)))
    return 0


def _score(counts: Counter[str]) -> float:
    scored = sum(counts.values()) - counts["skipped"]
    return 100.0 * sum(counts[s] for s in DETECTED) / scored if scored else 0.0


def _row(label: str, counts: Counter[str], width: int) -> str:
    cells = [sum(counts.values()), *(counts[c] for c in COLUMNS)]
    return f"{label:<{width}}" + "".join(f"{c:>12}" for c in cells) + f"{_score(counts):>11.1f}%"


def _diff(name: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    try:
        return get_diff_for_mutant(name)
    except Exception as exc:  # a diff is a convenience: never let it hide the score
        return f"(no diff: {exc})"


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
