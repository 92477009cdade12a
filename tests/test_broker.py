"""The broker transport: kombu's Redis transport with one client per channel."""

from __future__ import annotations

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
        "    print(connection.transport.driver_type, connection.transport.polling_interval)\n"
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
    assert result.stdout.split() == ["filesystem", "0.05"]
