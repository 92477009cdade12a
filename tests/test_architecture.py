"""docs/architecture.md's path from DATA to POST is a map a reader can follow:
at most a dozen steps, and every function it names exists where it says."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
NAMED = re.compile(r"`((?:ingress|webhooks|conduit)(?:\.\w+)+):(\w+(?:\.\w+)*)`")


def _path_section() -> str:
    text = DOC.read_text()
    start = text.index("## From DATA to POST")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _steps(section: str) -> list[str]:
    return re.findall(r"^(\d+)\. ", section, flags=re.MULTILINE)


def _resolve(module: str, qualname: str) -> object:
    found: object = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def test_it_reads_the_steps_and_names_of_the_map():
    section = _path_section()
    assert _steps(section)[:2] == ["1", "2"]
    assert ("webhooks.delivery", "next_state") in NAMED.findall(section)


def test_the_path_from_data_to_post_takes_at_most_a_dozen_steps():
    steps = _steps(_path_section())
    assert steps == [str(n) for n in range(1, len(steps) + 1)]
    assert len(steps) <= 12


def test_every_function_the_map_names_exists():
    names = NAMED.findall(_path_section())
    assert len(names) >= 12
    missing = []
    for module, qualname in names:
        try:
            found = _resolve(module, qualname)
        except (ImportError, AttributeError):
            missing.append(f"{module}:{qualname}")
            continue
        if not callable(found):
            missing.append(f"{module}:{qualname} (not a function)")
    assert missing == []
