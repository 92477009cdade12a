"""The Celery application shared by the worker, beat and every enqueuing process."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.app.defaults import DEFAULTS
from celery.signals import after_setup_logger, after_setup_task_logger, worker_ready
from django.conf import settings

from conduit.logs import use_json
from conduit.opsserver import WorkerOps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conduit.settings")

app = Celery("conduit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The heartbeat and the /metrics, /healthz, /readyz port (conduit.opsserver).
app.steps["worker"].add(WorkerOps)


@app.on_after_configure.connect
def _settle_configuration(sender: Celery, **kwargs: Any) -> None:
    # Celery reads its settings on every publish and every task (seven lookups
    # a task). Read through Django's settings, each lookup tries several
    # spellings and fails with AttributeError on the ones not set: ~70 us of
    # the ~400 us a publish took. The values, settled once, are a dict lookup.
    sender.conf.update({key: sender.conf[key] for key in DEFAULTS})


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **kwargs: Any) -> None:
    # The worker and beat log through handlers Celery sets up itself, in its
    # own format; CONDUIT_LOG_FORMAT=json holds for them too.
    if settings.CONDUIT_LOG_FORMAT == "json":
        use_json(logger)


@worker_ready.connect
def _warn_of_private_targets(**kwargs: Any) -> None:
    # On by default in development (DEBUG), so a first webhook can point at a
    # receiver on this machine; said once, loudly, where the deliveries happen.
    if settings.CONDUIT_ALLOW_PRIVATE_TARGETS:
        logging.getLogger("conduit.delivery").warning(
            "CONDUIT_ALLOW_PRIVATE_TARGETS is on%s: webhooks may be delivered to loopback "
            "and private network addresses (127.0.0.1, 10.0.0.0/8, ...). Never run a "
            "production service this way; set CONDUIT_ALLOW_PRIVATE_TARGETS=false.",
            " (the default with DEBUG)" if settings.DEBUG else "",
        )
