"""Imports point one way: config -> batch -> data -> layers -> model -> step -> ... -> cli (issue 17).

The training step, the model and the ``rnnreg.testing`` toolkit never load the data sources (and with them the
downloader); every ``rnnreg.*`` import of every module under rnnreg/, at module level or inside a function, goes to
a module of a lower rank, or stays within its own package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rnnreg"

# Lower imports nothing of higher. Modules of one rank are peers: neither may import the other. A key names a
# module or a package; a package's modules share its rank and may import one another.
RANKS: dict[str, int] = {
    "rnnreg": 0,  # the root __init__: imports nothing, so anyone may import it
    "rnnreg.allocator": 1,
    "rnnreg.cores": 1,
    "rnnreg.fsio": 1,
    "rnnreg.config": 1,
    "rnnreg.batch": 2,
    "rnnreg.data": 3,
    "rnnreg.layers": 4,
    "rnnreg.model": 5,
    "rnnreg.step": 6,
    "rnnreg.testing": 7,  # the component-check toolkit: needs the step, never the data sources
    "rnnreg.mechanisms": 8,
    "rnnreg.checkpoint": 9,  # checkpoint files: fit writes and reads them
    "rnnreg.fit": 10,
    "rnnreg.notebook": 11,  # the notebook's presets; ablation reads them
    "rnnreg.bench": 11,
    "rnnreg.ablation": 12,
    "rnnreg.sweep": 13,
    "rnnreg.stats": 14,
    "rnnreg.report": 15,  # reads stats
    "rnnreg.outputs": 16,  # a report's files and plots: report computes, outputs draws and writes
    "rnnreg.study": 17,  # the main job as a library call
    "rnnreg.cli": 18,
}

# Tighter than the ranks: all these packages may import (besides themselves).
MAY_ONLY_IMPORT: dict[str, frozenset[str]] = {
    "rnnreg.data": frozenset({"rnnreg", "rnnreg.config", "rnnreg.batch"}),
    # fsio: testing.results writes its JSON and JUnit files atomically (the bottom rank, beside config)
    "rnnreg.testing": frozenset(
        {"rnnreg", "rnnreg.config", "rnnreg.fsio", "rnnreg.batch", "rnnreg.layers", "rnnreg.model", "rnnreg.step"}
    ),
}

# Inside rnnreg.data, by topic: the text pieces, the corpus made of them, the sources, the registry above them.
DATA_RANKS: dict[str, int] = {
    "rnnreg.data.text": 0,
    "rnnreg.data.corpus": 1,
    "rnnreg.data.sources": 2,  # the sources' __init__: a docstring
    "rnnreg.data.sources.files": 2,
    "rnnreg.data.sources.synthetic": 2,
    "rnnreg.data.sources.vader": 3,  # reads its snippet files with the files' utf-8 decoder
    "rnnreg.data.registry": 4,
    "rnnreg.data": 5,  # the package's __init__: re-exports
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def rnnreg_imports(source: str, name: str, known: set[str]) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` of every rnnreg import in ``source``, module level or in a function."""
    package = name if name in known and (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").exists() else None
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "rnnreg" or alias.name.startswith("rnnreg."):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                anchor = (package or name.rpartition(".")[0]).split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base != "rnnreg" and not base.startswith("rnnreg."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"  # `from rnnreg import fit` imports the module rnnreg.fit
                yield node.lineno, sub if sub in known else base


def unit(module: str, ranks: Mapping[str, int]) -> str | None:
    """The key of ``ranks`` that places ``module``: itself or its closest package (the table's root, its shortest
    key, is a package's own ``__init__`` and places itself only)."""
    root = min(ranks, key=len)
    if module == root:
        return root
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in ranks and key != root:
            return key
    return None


def violations(
    name: str,
    source: str,
    known: set[str],
    ranks: Mapping[str, int],
    only: Mapping[str, frozenset[str]],
    scope: str = "rnnreg",
) -> list[str]:
    """One line for each import of ``source`` (module ``name``) into ``scope`` that points the wrong way."""
    found = []
    here = unit(name, ranks)
    for line, target in dict.fromkeys(rnnreg_imports(source, name, known)):  # once per line and module
        if target != scope and not target.startswith(f"{scope}."):
            continue
        there = unit(target, ranks)
        where = f"{name} (line {line}) imports {target}"
        if here is None or there is None:
            found.append(f"{where}: {name if here is None else target} has no rank; add it to the table")
        elif here == there:
            continue  # within one package
        elif ranks[there] >= ranks[here]:
            found.append(f"{where}: {there} (rank {ranks[there]}) is not below {here} (rank {ranks[here]})")
        elif here in only and there not in only[here]:
            found.append(f"{where}: {here} may import only {sorted(only[here])}")
    return found


def test_every_import_points_down_the_rank_table() -> None:
    found = modules()
    known = set(found)
    wrong = [
        v for name, path in found.items() for v in violations(name, path.read_text(), known, RANKS, MAY_ONLY_IMPORT)
    ]
    assert not wrong, "imports that point the wrong way:\n" + "\n".join(wrong)


def test_inside_the_data_package_the_registry_sits_above_the_sources_above_the_corpus() -> None:
    found = {name: path for name, path in modules().items() if name.split(".")[:2] == ["rnnreg", "data"]}
    assert {"rnnreg.data.text", "rnnreg.data.registry", "rnnreg.data.sources.vader"} <= set(found)
    known = set(modules())
    wrong = [  # its imports from outside are checked above
        v
        for name, path in found.items()
        for v in violations(name, path.read_text(), known, DATA_RANKS, {}, scope="rnnreg.data")
    ]
    assert not wrong, "imports inside rnnreg.data that point the wrong way:\n" + "\n".join(wrong)


def test_the_scan_sees_module_level_function_level_and_from_package_imports() -> None:
    known = set(modules())
    fit = {m for _, m in rnnreg_imports((PACKAGE / "fit.py").read_text(), "rnnreg.fit", known)}
    assert {"rnnreg.data", "rnnreg.model", "rnnreg.fsio", "rnnreg.mechanisms"} <= fit  # from rnnreg import fsio, ...
    ablation = {m for _, m in rnnreg_imports((PACKAGE / "ablation.py").read_text(), "rnnreg.ablation", known)}
    assert "rnnreg.fit" in ablation  # imported inside a function only


def test_an_upward_import_is_named_in_the_failure() -> None:
    known = set(modules())
    source = "import torch\n\n\ndef f():\n    from rnnreg.fit import fit\n    return fit\n"
    assert violations("rnnreg.model", source, known, RANKS, MAY_ONLY_IMPORT) == [
        "rnnreg.model (line 5) imports rnnreg.fit: rnnreg.fit (rank 10) is not below rnnreg.model (rank 5)"
    ]
    peers = violations("rnnreg.fsio", "from rnnreg import config\n", known, RANKS, MAY_ONLY_IMPORT)
    assert peers == [
        "rnnreg.fsio (line 1) imports rnnreg.config: rnnreg.config (rank 1) is not below rnnreg.fsio (rank 1)"
    ]
    toolkit = violations("rnnreg.testing.suite", "from rnnreg.cores import free_cores\n", known, RANKS, MAY_ONLY_IMPORT)
    assert len(toolkit) == 1 and "rnnreg.testing may import only" in toolkit[0]
    relative = violations("rnnreg.data.text", "from .registry import load_corpus\n", known, DATA_RANKS, {})
    assert relative == [
        "rnnreg.data.text (line 1) imports rnnreg.data.registry: rnnreg.data.registry (rank 4) is not below "
        "rnnreg.data.text (rank 0)"
    ]
    unplaced = violations("rnnreg.newthing", "from rnnreg.batch import Batch\n", known, RANKS, MAY_ONLY_IMPORT)
    assert len(unplaced) == 1 and "rnnreg.newthing has no rank" in unplaced[0]


def test_the_step_model_and_toolkit_load_no_data_module() -> None:
    # A fresh interpreter: this process has long imported rnnreg.data through other test files.
    probe = (
        "import sys, rnnreg.testing, rnnreg.step, rnnreg.model; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('rnnreg'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.split()
    assert {"rnnreg.testing", "rnnreg.step", "rnnreg.model", "rnnreg.batch"} <= set(loaded)  # the probe saw them
    data = [m for m in loaded if m == "rnnreg.data" or m.startswith("rnnreg.data.")]
    assert data == [], f"importing the step, the model and rnnreg.testing loaded {data}"
