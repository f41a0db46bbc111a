"""Mutation-test one of the scopes of ``tools/mutation-scopes.toml`` in a copy of the project.

    python tools/mutation_scope.py harness .mutation-harness [--goal 85] [--diff] [--copy-only]

mutmut reads its settings from ``[tool.mutmut]`` of the ``pyproject.toml`` in its working directory, and the core
scope (``tox -e mutation``) keeps pyproject.toml's own table. A second scope needs its own table and its own
test selection (the harness's tests would otherwise run against every mutant of the training core that they
happen to call), so ``tox -e mutation-harness`` runs mutmut in a copy made by this script: the tracked files of
the project, with pyproject.toml's ``[tool.mutmut]`` table replaced by the scope's. It then runs ``mutmut run``
there and ``tools/mutation_score.py`` on the result (``--copy-only`` stops after the copy).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCOPES = ROOT / "tools" / "mutation-scopes.toml"
TABLE = re.compile(r"^\[tool\.mutmut\]\n(?:(?!^\[).*\n?)*", re.MULTILINE)  # the table, up to the next header


def scope_table(name: str) -> str:
    """The ``[tool.mutmut]`` table of scope ``name``, as TOML text."""
    text = SCOPES.read_text("utf-8")
    scopes = tomllib.loads(text)
    if name not in scopes:
        raise SystemExit(f"no mutation scope {name!r} in {SCOPES.name}; choose one of {', '.join(scopes)}")
    block = re.search(rf"^\[{re.escape(name)}\]\n((?:(?!^\[).*\n?)*)", text, re.MULTILINE)
    if block is None:  # a header tomllib reads but this pattern does not (quoted, or with spaces)
        raise SystemExit(f"write the scope's header as [{name}] in {SCOPES.name}")
    return "[tool.mutmut]\n" + block.group(1).rstrip() + "\n\n"


def with_scope(pyproject: str, table: str) -> str:
    if not TABLE.search(pyproject):
        raise SystemExit("pyproject.toml has no [tool.mutmut] table to replace")
    return TABLE.sub(lambda _m: table, pyproject, count=1)


def copy_project(name: str, dest: Path) -> None:
    """The tracked files of the project in ``dest``, with scope ``name`` as pyproject.toml's ``[tool.mutmut]``."""
    table = scope_table(name)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    shutil.rmtree(dest, ignore_errors=True)
    for raw in filter(None, files):
        source = ROOT / raw.decode()
        if source.is_file():
            target = dest / raw.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    pyproject = dest / "pyproject.toml"
    pyproject.write_text(with_scope(pyproject.read_text("utf-8"), table), "utf-8")
    tomllib.loads(pyproject.read_text("utf-8"))  # still valid TOML


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scope", help="a table of tools/mutation-scopes.toml, e.g. harness")
    parser.add_argument("dest", type=Path, help="where to make the copy (emptied first)")
    parser.add_argument("--goal", default="85", help="the score goal in percent, for tools/mutation_score.py")
    parser.add_argument("--diff", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--copy-only", action="store_true", help="make the copy and stop")
    args = parser.parse_args(argv)
    dest = args.dest.resolve()
    copy_project(args.scope, dest)
    print(f"mutation scope {args.scope!r}: a copy of the project in {dest}", flush=True)
    if args.copy_only:
        return 0
    os.chdir(dest)
    run = subprocess.run(["mutmut", "run", "--max-children", "2"], check=False)
    if run.returncode != 0:
        return run.returncode
    score = [sys.executable, "tools/mutation_score.py", "--goal", args.goal, *(["--diff"] if args.diff else [])]
    return subprocess.run(score, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
