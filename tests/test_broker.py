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
