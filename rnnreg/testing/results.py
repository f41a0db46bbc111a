"""The results of ``rnnreg check`` as files for CI: JSON, and JUnit XML that CI systems display as test results."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnreg.fsio import atomic_write_bytes, atomic_write_text, check_output_file
from rnnreg.testing.suite import CheckResult

__all__ = ["STATUSES", "summary", "to_json", "to_junit", "write_json", "write_junit"]

STATUSES = ("PASS", "FAIL", "WARN", "SKIP", "NOT RUN")


def summary(rows: Sequence[CheckResult]) -> dict[str, int]:
    """Count of rows per status, every status present (zero when none)."""
    counts: Counter[str] = Counter(r.status for r in rows)
    return {status: counts[status] for status in STATUSES}


def to_json(rows: Sequence[CheckResult]) -> dict[str, Any]:
    """``{"summary": {status: count}, "ok": no FAIL, "checks": [{"name", "status", "detail"}, ...]}``."""
    return {
        "summary": summary(rows),
        "ok": not any(r.status == "FAIL" for r in rows),
        "checks": [{"name": r.name, "status": r.status, "detail": r.detail} for r in rows],
    }


def to_junit(rows: Sequence[CheckResult], suite_name: str = "rnnreg check") -> ET.Element:
    """One ``<testcase>`` per check: FAIL -> ``<failure>``, NOT RUN -> ``<error>``, SKIP -> ``<skipped>``, WARN ->
    passed with the warning in ``<system-out>``."""
    counts = summary(rows)
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(rows)),
        failures=str(counts["FAIL"]),
        errors=str(counts["NOT RUN"]),
        skipped=str(counts["SKIP"]),
    )
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname="rnnreg.check", name=r.name)
        first_line = r.detail.splitlines()[0] if r.detail else r.status
        if r.status == "FAIL":
            ET.SubElement(case, "failure", message=first_line, type="InvariantViolation").text = r.detail
        elif r.status == "NOT RUN":
            ET.SubElement(case, "error", message=first_line, type="CheckCouldNotRun").text = r.detail
        elif r.status == "SKIP":
            ET.SubElement(case, "skipped", message=first_line)
        elif r.status == "WARN":
            ET.SubElement(case, "system-out").text = f"WARN: {r.detail}"
    root = ET.Element("testsuites", name=suite_name, tests=str(len(rows)))
    root.append(suite)
    return root


def write_json(rows: Sequence[CheckResult], path: str | Path) -> None:
    """:func:`to_json` as indented UTF-8 at ``path``, written atomically (a failed write keeps the old file)."""
    check_output_file(Path(path), "json path", example="check.json")
    atomic_write_text(Path(path), json.dumps(to_json(rows), indent=2) + "\n")


def write_junit(rows: Sequence[CheckResult], path: str | Path) -> None:
    """:func:`to_junit` as indented, declared UTF-8 XML at ``path``, written atomically."""
    check_output_file(Path(path), "junit path", example="check.xml")
    tree = ET.ElementTree(to_junit(rows))
    ET.indent(tree)
    xml = io.BytesIO()
    tree.write(xml, encoding="utf-8", xml_declaration=True)
    atomic_write_bytes(Path(path), xml.getvalue())
