"""The repository is all the project needs: nothing reads a file beside it.

Tests and tools run from a clone in any directory (bin/test in a fresh clone),
so no source may reach outside the repository for data, e.g. a contract file
in a sibling folder: the contract's endpoint list lives in docs/contract/.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# "../shared/..." in a path, or a path joined with a "shared" folder.
OUTSIDE = re.compile(r"""\.\./shared|/\s*["']shared["']|["']shared["']\s*/""")


def _sources() -> list[Path]:
    skip = {".venv", ".git", "node_modules", "var", "results"}
    found = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if skip.intersection(parts) or not path.is_file():
            continue
        if path.suffix in {".py", ".toml", ".cfg", ".yml", ".yaml"} or path.parent.name == "bin":
            found.append(path)
    return found


def test_it_finds_a_read_outside_the_repository():
    assert OUTSIDE.search('ROOT.parent / "shared" / "contract" / "endpoints.tsv"')
    assert OUTSIDE.search("open('../shared/contract/endpoints.tsv')")
    assert not OUTSIDE.search("from tests.dns_fixtures import shared_dns_server")


def test_no_source_reads_outside_the_repository():
    this = Path(__file__).resolve()
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _sources()
        if path != this
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_the_contract_endpoint_list_is_in_the_repository():
    endpoints = ROOT / "docs" / "contract" / "endpoints.tsv"
    rows = endpoints.read_text().splitlines()
    assert rows[0].split("\t")[:3] == ["method", "path", "operation_id"]
    assert len(rows) - 1 == 38
