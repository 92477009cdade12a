"""Settings come from the environment and refuse bad values loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from conduit.env import env_bool, env_choice, env_float, env_int, env_list

ROOT = Path(__file__).resolve().parents[1]


def test_it_reads_typed_values(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "42")
    monkeypatch.setenv("X_FLOAT", "1.5")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_bool("X_BOOL") is True
    assert env_int("X_INT", 0) == 42
    assert env_float("X_FLOAT", 0.0) == 1.5
    assert env_list("X_LIST") == ["a", "b", "c"]
    assert env_int("X_MISSING", 7) == 7


@pytest.mark.parametrize(
    "reader,value",
    [
        (lambda: env_bool("X"), "maybe"),
        (lambda: env_int("X", 1), "ten"),
        (lambda: env_float("X", 1.0), "x"),
        (lambda: env_choice("X", "a", ("a", "b")), "c"),
    ],
)
def test_it_fails_loudly_on_bad_values(monkeypatch, reader, value):
    monkeypatch.setenv("X", value)
    with pytest.raises(ImproperlyConfigured, match="X="):
        reader()


def test_it_enforces_minimums(monkeypatch):
    monkeypatch.setenv("X", "-1")
    with pytest.raises(ImproperlyConfigured, match="minimum"):
        env_int("X", 1, minimum=0)


def _check(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_refuses_to_start_without_a_secret_key_in_production():
    result = _check({})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_it_starts_with_a_secret_key_or_in_debug():
    assert _check({"SECRET_KEY": "a-real-secret"}).returncode == 0
    assert _check({"DEBUG": "true"}).returncode == 0


def test_it_names_a_bad_variable():
    result = _check({"SECRET_KEY": "s", "CONDUIT_DNS_TIMEOUT": "soon"})
    assert result.returncode != 0
    assert "CONDUIT_DNS_TIMEOUT='soon' is not a number" in result.stderr


def _printed_by_django(code: str, env: dict[str, str]) -> str:
    """What ``code`` prints in a fresh process with Django set up under ``env``."""
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "conduit.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_it_falls_back_to_sqlite_and_a_serverless_broker(tmp_path):
    code = (
        "from django.conf import settings; "
        "print(settings.DATABASES['default']['ENGINE']); print(settings.CELERY_BROKER_URL); "
        "print(settings.CACHES['default']['BACKEND'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(SECRET_KEY="s", CONDUIT_VAR_DIR=str(tmp_path))
    engine, broker, cache = _printed_by_django(code, env).split()
    assert engine == "django.db.backends.sqlite3"
    assert broker == "filesystem://localhost/"
    assert cache.endswith("FileBasedCache")


def _worker_banner(env: dict[str, str]) -> str:
    """The banner of `celery -A conduit worker` as the Procfile runs it, up to "ready"."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_WORKER")}
    clean.update(SECRET_KEY="s", **env)
    argv = [sys.executable, "-m", "celery", "-A", "conduit", "worker", "--loglevel=INFO"]
    # A queue of its own: it must not take other tests' tasks while it starts.
    argv += ["--queues", "settings-test", "--without-gossip", "--without-mingle"]
    process = subprocess.Popen(
        argv, cwd=ROOT, env=clean, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if " ready." in line:
                break
    finally:
        process.terminate()
        process.wait(timeout=30)
    return "".join(lines)


def test_the_worker_runs_deliveries_in_threads_by_default():
    # The CLI's own default (prefork) gives way to the configured pool.
    assert "concurrency: 16 (thread)" in _worker_banner({})
    banner = _worker_banner({"CONDUIT_WORKER_POOL": "solo", "CONDUIT_WORKER_CONCURRENCY": "3"})
    assert "(solo)" in banner


def test_it_refuses_an_unknown_worker_pool():
    result = _check({"SECRET_KEY": "s", "CONDUIT_WORKER_POOL": "gevent"})
    assert result.returncode != 0
    assert "CONDUIT_WORKER_POOL='gevent' is not one of threads, prefork, solo" in result.stderr


def test_the_smtp_protocol_trace_is_off_unless_asked_for():
    # aiosmtpd logs a dozen INFO lines per session; the ingress writes one.
    code = (
        "import django, logging; django.setup(); "
        "print(logging.getLogger('mail.log').isEnabledFor(logging.INFO), "
        "logging.getLogger('conduit.ingress').isEnabledFor(logging.INFO))"
    )
    for trace, expected in (("", "False True"), ("true", "True True")):
        env = dict(os.environ, SECRET_KEY="s", DJANGO_SETTINGS_MODULE="conduit.settings")
        env["CONDUIT_SMTP_TRACE"] = trace
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == expected.split()


# --- A development checkout: bin/serve has written var/secret_key -------------------


def _plain_shell(var_dir: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """manage.py as a newcomer runs it: no SECRET_KEY, DEBUG, DATABASE_URL or REDIS_URL."""
    drop = {"SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "CONDUIT_ALLOW_PRIVATE_TARGETS"}
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    clean.update(CONDUIT_VAR_DIR=str(var_dir), **env)
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


SHOW_SETTINGS = (
    "from django.conf import settings; "
    "print(settings.DEBUG, settings.SECRET_KEY, settings.CONDUIT_ALLOW_PRIVATE_TARGETS)"
)


def test_a_plain_shell_uses_the_development_key_bin_serve_wrote(tmp_path):
    (tmp_path / "secret_key").write_text("key-written-by-bin-serve\n")
    result = _plain_shell(tmp_path, "shell", "-v", "0", "-c", SHOW_SETTINGS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "key-written-by-bin-serve", "True"]


def test_createsuperuser_works_in_a_plain_shell_after_bin_serve(tmp_path):
    (tmp_path / "secret_key").write_text("key-written-by-bin-serve\n")
    assert _plain_shell(tmp_path, "migrate", "--noinput", "-v", "0").returncode == 0
    result = _plain_shell(
        tmp_path,
        "createsuperuser",
        "--noinput",
        DJANGO_SUPERUSER_EMAIL="ops@example.com",
        DJANGO_SUPERUSER_PASSWORD="a-long-admin-password",
    )
    assert result.returncode == 0, result.stderr
    assert "Superuser created successfully." in result.stdout


def test_the_development_key_is_not_used_when_debug_is_off(tmp_path):
    (tmp_path / "secret_key").write_text("key-written-by-bin-serve\n")
    result = _plain_shell(tmp_path, "check", DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_is_unchanged_by_a_development_key(tmp_path):
    # SECRET_KEY set: DEBUG stays off and private targets stay refused.
    (tmp_path / "secret_key").write_text("key-written-by-bin-serve\n")
    result = _plain_shell(
        tmp_path, "shell", "-v", "0", "-c", SHOW_SETTINGS, SECRET_KEY="production-key"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "production-key", "False"]


def test_private_targets_follow_debug_unless_set(tmp_path):
    result = _plain_shell(tmp_path, "shell", "-v", "0", "-c", SHOW_SETTINGS, DEBUG="true")
    assert result.stdout.split()[::2] == ["True", "True"]
    result = _plain_shell(
        tmp_path,
        "shell",
        "-v",
        "0",
        "-c",
        SHOW_SETTINGS,
        DEBUG="true",
        CONDUIT_ALLOW_PRIVATE_TARGETS="no",
    )
    assert result.stdout.split()[::2] == ["True", "False"]


def test_the_worker_warns_loudly_while_private_targets_are_allowed(tmp_path):
    env = {"CONDUIT_VAR_DIR": str(tmp_path), "DATABASE_URL": "", "REDIS_URL": ""}
    banner = _worker_banner({**env, "DEBUG": "true"})
    warning = next(line for line in banner.splitlines() if "PRIVATE_TARGETS is on" in line)
    assert "WARNING" in warning
    assert "CONDUIT_ALLOW_PRIVATE_TARGETS is on (the default with DEBUG)" in warning
    assert "CONDUIT_ALLOW_PRIVATE_TARGETS" not in _worker_banner(env)


def test_it_refuses_a_raw_storage_that_is_no_s3_url():
    result = _check({"SECRET_KEY": "s", "CONDUIT_RAW_STORAGE": "ftp://files/raw"})
    assert result.returncode != 0
    assert "CONDUIT_RAW_STORAGE='ftp://files/raw' is neither 'database' nor s3://" in result.stderr
    ok = _check({"SECRET_KEY": "s", "CONDUIT_RAW_STORAGE": "s3://bucket/raw?addressing_style=path"})
    assert ok.returncode == 0, ok.stderr


def test_it_refuses_a_maximum_retention_below_the_default():
    env = {"SECRET_KEY": "s", "CONDUIT_RAW_MESSAGE_RETENTION_DAYS": "10"}
    result = _check({**env, "CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS": "5"})
    assert result.returncode != 0
    assert "CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS=5 is below" in result.stderr


def _database_options(**env: str) -> str:
    code = "from django.conf import settings; print(settings.DATABASES['default'].get('OPTIONS'))"
    clean = {k: v for k, v in os.environ.items() if k != "CONDUIT_PREPARED_STATEMENTS"}
    clean.update(SECRET_KEY="s", **env)
    return _printed_by_django(code, clean).strip()


def test_prepared_statements_are_on_for_postgresql_unless_switched_off():
    url = "postgres://postgres@127.0.0.1:5432/conduit"
    assert _database_options(DATABASE_URL=url) == "{'prepare_threshold': 5}"
    assert _database_options(DATABASE_URL=url, CONDUIT_PREPARED_STATEMENTS="false") == "{}"
    # DATABASE_URL's own choice wins.
    options = _database_options(DATABASE_URL=url + "?prepare_threshold=0")
    assert options == "{'prepare_threshold': 0}"
