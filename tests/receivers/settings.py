"""Settings of the receiving app the payload formats are tested against (tests/receivers).

A Django project of its own, run in its own process (server.py): django-anymail's inbound
views need Django settings, and the test process already runs Conduit's. The credentials
come from the environment the tests start it with.
"""

from __future__ import annotations

import os

SECRET_KEY = "receiver-test-key-not-for-production"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.receivers.urls"
INSTALLED_APPS = ["anymail"]
MIDDLEWARE: list[str] = []
USE_TZ = True
DATABASES: dict = {}
DATA_UPLOAD_MAX_MEMORY_SIZE = 30 * 1024 * 1024
LOGGING = {"version": 1, "disable_existing_loggers": False}

ANYMAIL = {
    # Basic auth that every inbound view checks ("Securing webhooks" in anymail's docs).
    "WEBHOOK_SECRET": os.environ["RECEIVER_BASIC_AUTH"],
    # Mailgun's HTTP webhook signing key: the inbound view verifies each POST's signature.
    "MAILGUN_WEBHOOK_SIGNING_KEY": os.environ["RECEIVER_MAILGUN_SIGNING_KEY"],
}
