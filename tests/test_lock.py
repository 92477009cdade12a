"""requirements.lock (what the Docker image and bin/serve install) covers every
dependency pyproject.toml declares, within its range, each file hash-checked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
REGENERATE = "run bin/lock (it rewrites requirements.lock from pyproject.toml)"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def locked() -> dict[str, tuple[Version, int]]:
    """Package -> (pinned version, number of hashes) as the lock file lists them."""
    pins: dict[str, tuple[Version, int]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match[1])
            pins[current] = (Version(match[2]), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
        elif not line.startswith(" "):
            current = None
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def test_it_pins_every_dependency_within_its_range():
    pins = locked()
    problems = []
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not in requirements.lock")
        elif not requirement.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"requirements.lock pins {name}=={pins[name][0]}, not {requirement}")
    assert not problems, "; ".join(problems) + f": {REGENERATE}"


def test_every_pinned_package_carries_its_hashes():
    # pip --require-hashes refuses a lock with a single unhashed line.
    pins = locked()
    assert len(pins) > len(declared())  # dependencies of the dependencies too
    unhashed = [name for name, (_, hashes) in pins.items() if hashes == 0]
    assert not unhashed, f"no --hash for {', '.join(unhashed)}: {REGENERATE}"


def test_it_installs_from_pypi_alone():
    # No machine-specific index or wheel folder leaks into the lock.
    text = LOCK.read_text()
    assert not re.search(r"^\s*--(index-url|extra-index-url|find-links|trusted-host)", text, re.M)
    assert "file://" not in text


# --- The Docker image (read here: Docker itself does not run in the tests) ----------


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_image_installs_from_the_lock_and_runs_unprivileged():
    text = dockerfile()
    assert "pip install --require-hashes -r requirements.lock" in text
    assert "pip install --no-deps ." in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert text.index("USER") < text.index("CMD [")


def test_the_image_health_check_asks_the_web_process(httpserver):
    command = json.loads(re.search(r"^\s+CMD (\[.*\])$", dockerfile(), re.M)[1])
    assert command[0] == "python"

    def check() -> int:
        env = dict(os.environ, PORT=str(httpserver.port))
        return subprocess.run([sys.executable, *command[1:]], env=env, timeout=30).returncode

    # /healthz answers before any host check (conduit.ops), so any Host header gets a 200.
    httpserver.expect_request("/healthz").respond_with_json({"status": "alive"})
    assert check() == 0
    httpserver.clear()
    httpserver.expect_request("/healthz").respond_with_data("down", status=503)
    assert check() != 0


def test_bin_serve_installs_from_the_lock():
    text = (ROOT / "bin" / "serve").read_text()
    assert "pip install -q --require-hashes -r requirements.lock" in text
    assert "pip install -q --no-deps -e ." in text


def test_it_was_written_by_bin_lock():
    # bin/lock passes the flags that make the lock usable anywhere (PyPI's hashes only).
    assert "#    bin/lock\n" in LOCK.read_text()
