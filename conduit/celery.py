"""The Celery application shared by the worker, beat and every enqueuing process."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.app.defaults import DEFAULTS

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conduit.settings")

app = Celery("conduit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _settle_configuration(sender: Celery, **kwargs: Any) -> None:
    # Celery reads its settings on every publish and every task (seven lookups
    # a task). Read through Django's settings, each lookup tries several
    # spellings and fails with AttributeError on the ones not set: ~70 us of
    # the ~400 us a publish took. The values, settled once, are a dict lookup.
    sender.conf.update({key: sender.conf[key] for key in DEFAULTS})
