"""The README's commands exist as written (the quickstart itself was walked
through by hand on a fresh var/; each command has its own tests)."""

from __future__ import annotations

import re
from pathlib import Path

from django.core.management import get_commands

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_manage_py_command_it_shows_exists():
    shown = set(re.findall(r"manage\.py (\w+)", README))
    assert {"domain_verify_dev", "webhook_receiver", "createsuperuser"} <= shown
    assert not shown - set(get_commands())


def test_every_script_it_shows_is_in_the_repository():
    for script in set(re.findall(r"(?<![\w/.])(bin/\w+|bench/\w+\.py)", README)):
        assert (ROOT / script).exists(), script
