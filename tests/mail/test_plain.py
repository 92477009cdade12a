"""The mail-reading package and the payload builder are plain Python: importing
them loads no Django, so they can be read, run and tested on their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_it_sees_django_where_it_is_loaded():
    assert "django" in _modules_loaded_by("django.conf")


def test_the_mail_package_and_the_payload_load_no_django():
    for module in ("webhooks.mail.mime", "webhooks.payload", "webhooks.compose"):
        loaded = _modules_loaded_by(module)
        assert not {name for name in loaded if name.split(".")[0] in {"django", "rest_framework"}}
