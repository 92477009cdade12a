"""The broker transport: kombu's Redis transport with one client per channel."""

from __future__ import annotations

import logging
from queue import Empty

import pytest
from kombu import Connection

from conduit import broker
from conduit.celery import app


def test_the_redis_channel_reuses_one_client_until_its_pool_changes():
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker.Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool
        channel._pool = None  # what kombu does after a connection error
        with channel.conn_or_acquire() as third:
            assert third is not first
            assert third.connection_pool is channel.pool
        given = object()
        with channel.conn_or_acquire(given) as client:
            assert client is given


def test_a_task_published_through_it_reaches_the_queue():
    queue = "broker-test"
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_purge(queue)
        app.send_task("webhooks.tasks.deliver_many", args=[[]], queue=queue, argsrepr="[[]]")
        assert channel._size(queue) == 1
        channel.queue_purge(queue)


def test_the_file_system_broker_looks_at_its_queue_every_50_ms(tmp_path):
    # kombu's default (1 s) was most of a message's time on the embedded default.
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from conduit.celery import app\n"
        "with app.connection_for_write() as connection:\n"
        "    transport = connection.transport\n"
        "    print(type(transport).__name__, transport.driver_type, transport.polling_interval)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(SECRET_KEY="s", CONDUIT_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["FileSystemTransport", "filesystem", "0.05"]


# --- The file-system channel, against the installed kombu ---------------------------


@pytest.fixture
def file_channel(tmp_path):
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    options["processed_folder"] = str(tmp_path / "processed")
    options["control_folder"] = str(tmp_path / "control")
    with Connection(
        "filesystem://", transport=broker.FileSystemTransport, transport_options=options
    ) as connection:
        yield connection.default_channel


def test_kombu_warns_of_a_file_system_url_without_a_host(tmp_path, caplog):
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    with (
        caplog.at_level(logging.WARNING, logger="kombu.connection"),
        Connection(
            "filesystem://", transport=broker.FileSystemTransport, transport_options=options
        ) as connection,
    ):
        connection.info()
    assert "No hostname was supplied" in caplog.text


def test_the_embedded_broker_connects_without_a_warning(tmp_path):
    """Else every enqueue on the embedded default logs a WARNING (see the test above)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from conduit.celery import app\n"
        "with app.connection_for_write() as connection:\n"
        "    connection.info()\n"
        "    print(connection.transport.driver_type)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(SECRET_KEY="s", CONDUIT_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["filesystem"]
    assert "No hostname was supplied" not in result.stderr


def test_a_message_written_by_the_file_channel_is_read_by_kombus_reader(file_channel, tmp_path):
    file_channel._put("jobs", {"body": "hello", "n": 1})
    files = [p.name for p in tmp_path.iterdir() if p.is_file()]
    assert len(files) == 1
    assert files[0].endswith(".jobs.msg")
    assert not list(tmp_path.glob(".*"))  # the hidden part file was renamed away
    assert file_channel._get("jobs") == {"body": "hello", "n": 1}
    with pytest.raises(Empty):
        file_channel._get("jobs")


def test_kombus_reader_skips_a_message_still_being_written(file_channel, tmp_path):
    # What a worker sees while _put writes: an empty file under the hidden name.
    (tmp_path / ".1000_3f0c1a6e-0000-4000-8000-000000000000.jobs.msg.part").write_bytes(b"")
    with pytest.raises(Empty):
        file_channel._get("jobs")
