"""Whether the database is PostgreSQL is asked in one place: the pipeline's
storage (webhooks.storage.on_postgresql). Anywhere else, a `connection.vendor`
test is a second seam a reader has to find."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEAM = ROOT / "webhooks" / "storage.py"
VENDOR_TEST = re.compile(r"\.vendor\b")


def _python_files() -> list[Path]:
    skip = {".venv", ".git", "node_modules", "var"}
    return [
        path for path in ROOT.rglob("*.py") if not skip.intersection(path.relative_to(ROOT).parts)
    ]


def test_it_finds_a_vendor_test():
    assert VENDOR_TEST.search('if schema_editor.connection.vendor == "postgresql":')
    assert VENDOR_TEST.search(SEAM.read_text())


def test_no_vendor_test_outside_the_storage_seam():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _python_files()
        if path not in (SEAM, Path(__file__).resolve())
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if VENDOR_TEST.search(line)
    ]
    assert found == [], "ask webhooks.storage.on_postgresql() instead:\n" + "\n".join(found)
