"""Beat schedules the sweep and the purges, and Celery is set up for at-least-once."""

from __future__ import annotations

from conduit.celery import app


def setup_module() -> None:
    # What a worker does at start: find every app's tasks module.
    app.loader.import_default_modules()


def test_it_schedules_the_sweep_and_the_purges():
    schedule = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert schedule["webhooks.tasks.sweep_deliveries"] == 10.0
    assert schedule["webhooks.tasks.purge_raw_messages"] == 3600.0
    assert schedule["webhooks.tasks.resume_recoveries"] == 30.0
    assert schedule["accounts.tasks.purge_audit_log"] == 6 * 3600.0
    registered = set(app.tasks)
    assert set(schedule) <= registered


def test_it_acks_late_and_prefetches_one():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    delivery_task = app.tasks["webhooks.tasks.deliver"]
    assert delivery_task.acks_late is True


def test_it_keeps_unacked_tasks_longer_than_the_longest_attempt(settings):
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility > settings.CONDUIT_DELIVERY_TIMEOUT + settings.CONDUIT_DELIVERY_LEASE_MARGIN


def test_celery_settings_are_settled_once_as_plain_values():
    # Read through Django's settings on every publish, each lookup cost ~10 us.
    from django.conf import settings

    assert app.conf.changes["task_acks_late"] is settings.CELERY_TASK_ACKS_LATE
    assert app.conf.changes["worker_pool"] == settings.CELERY_WORKER_POOL
    assert app.conf.changes["broker_transport"] == settings.CELERY_BROKER_TRANSPORT
    assert app.conf.changes["task_default_queue"] == "celery"  # Celery's own default
