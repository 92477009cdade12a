"""Django settings for Conduit.

Everything comes from environment variables (12-factor). With nothing set, the
service runs on an embedded default: SQLite for data, a file-system Celery
broker and a file-based cache, so one command brings it up on a bare machine.
Production sets DATABASE_URL, REDIS_URL, SECRET_KEY and ALLOWED_HOSTS.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from conduit.crypto import parse_keys
from conduit.env import env_bool, env_choice, env_float, env_int, env_list, env_str
from conduit.logs import init_sentry

BASE_DIR = Path(__file__).resolve().parent.parent
# Where the embedded defaults keep their files (SQLite, broker queue, cache).
VAR_DIR = Path(env_str("CONDUIT_VAR_DIR", str(BASE_DIR / "var")))

# bin/serve writes a random development key here on its first run. Where it
# exists and neither SECRET_KEY nor DEBUG=false is set, this is a development
# checkout: manage.py in a plain shell then runs as bin/serve's processes do,
# with this key and DEBUG on. Production sets SECRET_KEY, which always wins.
DEVELOPMENT_KEY_FILE = VAR_DIR / "secret_key"


def _development_key() -> str:
    if env_str("SECRET_KEY") or not env_bool("DEBUG", True):
        return ""
    try:
        return DEVELOPMENT_KEY_FILE.read_text().strip()
    except FileNotFoundError:
        return ""


_DEVELOPMENT_KEY = _development_key()
DEBUG = env_bool("DEBUG", bool(_DEVELOPMENT_KEY))

_INSECURE_KEY = "conduit-insecure-development-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY") or _DEVELOPMENT_KEY or _INSECURE_KEY
if not DEBUG and SECRET_KEY == _INSECURE_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Set SECRET_KEY to a long random value "
        "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
        "or set DEBUG=true for local development (bin/serve does, and writes a "
        f"development key to {DEVELOPMENT_KEY_FILE} that manage.py then reads)."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "conduit.apps.ConduitAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "conduit",
    "accounts",
    "domains",
    "policies",
    "webhooks",
    "notifications",
    "ingress",
]

MIDDLEWARE = [
    # First: /healthz, /readyz and /metrics answer before sessions, host checks,
    # authentication or throttling; it also times every /api/ request (conduit.ops).
    "conduit.ops.OpsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "conduit.middleware.ApiErrorMiddleware",
    "conduit.middleware.RequestLimitsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "conduit.urls"
WSGI_APPLICATION = "conduit.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data -----------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a usable database URL: {exc}") from None
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Prepared statements (Django leaves them off for connection poolers): the
    # statements the pipeline's storage binds server-side, above all the
    # ingress's group INSERT, are then planned once per connection instead of
    # on every run. Django's own queries bind on the client and are never
    # prepared. A prepare_threshold in DATABASE_URL wins (README).
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
        "CONDUIT_PREPARED_STATEMENTS", True
    ):
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "conduit.sqlite3",
            # Several processes (web, worker, beat, ingress) share the file.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Fail fast when Redis is down: sign-in then counts failures
            # from the audit log (accounts.throttling) instead of hanging.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    # File-based so that throttling counters are shared by every process.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- Auth -----------------------------------------------------------------
AUTH_USER_MODEL = "accounts.Account"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

CONDUIT_ACCESS_TOKEN_TTL = env_int("CONDUIT_ACCESS_TOKEN_TTL", 15 * 60, minimum=1)
CONDUIT_REFRESH_TOKEN_TTL = env_int("CONDUIT_REFRESH_TOKEN_TTL", 30 * 24 * 3600, minimum=1)
CONDUIT_PASSWORD_RESET_TTL = env_int("CONDUIT_PASSWORD_RESET_TTL", 3600, minimum=60)
# The link put in password reset emails; {token} is replaced by the token.
CONDUIT_PASSWORD_RESET_URL = env_str(
    "CONDUIT_PASSWORD_RESET_URL", "https://conduit.email/reset-password?token={token}"
)
CONDUIT_TOTP_CHALLENGE_TTL = env_int("CONDUIT_TOTP_CHALLENGE_TTL", 300, minimum=30)
# Failed sign-ins tolerated in one window before 429.
CONDUIT_SIGNIN_MAX_FAILURES_PER_ACCOUNT = env_int("CONDUIT_SIGNIN_MAX_FAILURES_PER_ACCOUNT", 10)
CONDUIT_SIGNIN_MAX_FAILURES_PER_IP = env_int("CONDUIT_SIGNIN_MAX_FAILURES_PER_IP", 50)
CONDUIT_SIGNIN_FAILURE_WINDOW = env_int("CONDUIT_SIGNIN_FAILURE_WINDOW", 15 * 60, minimum=1)
# Proxies whose X-Forwarded-For is believed (IPs or CIDRs). Empty: never trust it.
CONDUIT_TRUSTED_PROXIES = env_list("CONDUIT_TRUSTED_PROXIES")
CONDUIT_AUDIT_RETENTION_DAYS = env_int("CONDUIT_AUDIT_RETENTION_DAYS", 180, minimum=1)
# Fernet keys for secrets at rest (webhook secrets, TOTP seeds): the first
# encrypts, all decrypt. Unset: one derived from SECRET_KEY (conduit/crypto.py).
CONDUIT_ENCRYPTION_KEYS = env_list("CONDUIT_ENCRYPTION_KEYS")
parse_keys(CONDUIT_ENCRYPTION_KEYS)  # a bad key stops the start, naming the variable

# --- Domains, ingress, delivery --------------------------------------------
CONDUIT_MX_HOST = env_str("CONDUIT_MX_HOST", "mx.conduit.email")
CONDUIT_DNS_SERVERS = env_str("CONDUIT_DNS_SERVERS")
CONDUIT_DNS_TIMEOUT = env_float("CONDUIT_DNS_TIMEOUT", 5.0, minimum=0.1)

CONDUIT_INGRESS_HOST = env_str("CONDUIT_INGRESS_HOST", "0.0.0.0")  # noqa: S104
CONDUIT_INGRESS_PORT = env_int("CONDUIT_INGRESS_PORT", 2525, minimum=0)
# Processes sharing the listening socket; 0 = one per CPU core. SQLite (local
# runs) gets one: its writers queue for a single file lock anyway.
CONDUIT_INGRESS_PROCESSES = env_int("CONDUIT_INGRESS_PROCESSES", 0, minimum=0)
CONDUIT_MAX_MESSAGE_BYTES = env_int("CONDUIT_MAX_MESSAGE_BYTES", 25 * 1024 * 1024, minimum=1024)
CONDUIT_MAX_RECIPIENTS = env_int("CONDUIT_MAX_RECIPIENTS", 100, minimum=1)
CONDUIT_TLS_CERT = env_str("CONDUIT_TLS_CERT")
CONDUIT_TLS_KEY = env_str("CONDUIT_TLS_KEY")
CONDUIT_ALLOW_INSECURE_AUTH = env_bool("CONDUIT_ALLOW_INSECURE_AUTH", False)
# Seconds an SMTP command waits on the database (a recipient lookup, an AUTH
# check, storing a message with its SPF/DKIM checks) before answering 451.
CONDUIT_INGRESS_STORE_TIMEOUT = env_float("CONDUIT_INGRESS_STORE_TIMEOUT", 20.0, minimum=0.1)
# Failed SMTP AUTH attempts, per client address and per username, before
# further attempts get 421 (ingress/throttling.py).
CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_IP = env_int(
    "CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_IP", 10, minimum=1
)
CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_USERNAME = env_int(
    "CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_USERNAME", 10, minimum=1
)
CONDUIT_SMTP_AUTH_FAILURE_WINDOW = env_int("CONDUIT_SMTP_AUTH_FAILURE_WINDOW", 15 * 60, minimum=1)

# Webhooks to loopback/private addresses: refused in production (SSRF), allowed
# by default in development so the quickstart's local receiver works; the
# worker logs a warning at start while it is on.
CONDUIT_ALLOW_PRIVATE_TARGETS = env_bool("CONDUIT_ALLOW_PRIVATE_TARGETS", DEBUG)
CONDUIT_ALLOW_HTTP_TARGETS = env_bool("CONDUIT_ALLOW_HTTP_TARGETS", DEBUG)
CONDUIT_DELIVERY_CONNECT_TIMEOUT = env_float("CONDUIT_DELIVERY_CONNECT_TIMEOUT", 5.0, minimum=0.1)
CONDUIT_DELIVERY_TIMEOUT = env_float("CONDUIT_DELIVERY_TIMEOUT", 15.0, minimum=0.1)
CONDUIT_DELIVERY_MAX_RESPONSE_BYTES = env_int("CONDUIT_DELIVERY_MAX_RESPONSE_BYTES", 20 * 1024)
# A delivery left 'delivering' this long past its attempt's timeout is taken to
# belong to a dead worker, and the sweep gives it to another.
CONDUIT_DELIVERY_LEASE_MARGIN = env_float("CONDUIT_DELIVERY_LEASE_MARGIN", 30.0, minimum=0.5)
CONDUIT_SWEEP_INTERVAL = env_float("CONDUIT_SWEEP_INTERVAL", 10.0, minimum=1.0)
# A pending delivery whose task was enqueued this many seconds ago and has not
# run is taken to be lost (broker down, worker died); the sweep enqueues it again.
CONDUIT_REQUEUE_AFTER = env_float("CONDUIT_REQUEUE_AFTER", 60.0, minimum=1.0)
# Payload templates run in a box (webhooks/templating.py): output size, render
# time and loop iterations per render. Over a limit the delivery fails for good.
CONDUIT_TEMPLATE_MAX_OUTPUT_BYTES = env_int(
    "CONDUIT_TEMPLATE_MAX_OUTPUT_BYTES", 2 * CONDUIT_MAX_MESSAGE_BYTES, minimum=1024
)
CONDUIT_TEMPLATE_MAX_RENDER_SECONDS = env_float(
    "CONDUIT_TEMPLATE_MAX_RENDER_SECONDS", 2.0, minimum=0.01
)
CONDUIT_TEMPLATE_MAX_LOOP_ITERATIONS = env_int(
    "CONDUIT_TEMPLATE_MAX_LOOP_ITERATIONS", 100_000, minimum=1
)
# Raw MIME is kept this many days unless a webhook chooses otherwise, within
# the maximum (webhooks/retention.py).
CONDUIT_RAW_MESSAGE_RETENTION_DAYS = env_int("CONDUIT_RAW_MESSAGE_RETENTION_DAYS", 7, minimum=1)
CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS = env_int(
    "CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS", max(30, CONDUIT_RAW_MESSAGE_RETENTION_DAYS), minimum=0
)
if CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS < CONDUIT_RAW_MESSAGE_RETENTION_DAYS:
    raise ImproperlyConfigured(
        f"CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS={CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS} is below "
        f"CONDUIT_RAW_MESSAGE_RETENTION_DAYS={CONDUIT_RAW_MESSAGE_RETENTION_DAYS}"
    )
# A recovery sends the deliveries it queued again at most this many per
# second, so that new mail keeps its pace (webhooks/recovery.py).
CONDUIT_RECOVERY_RATE = env_float("CONDUIT_RECOVERY_RATE", 100.0, minimum=1.0)
# Where raw messages are written: the database (unset or "database") or an
# S3-compatible store, s3://bucket/prefix (endpoint and keys: boto3's own
# AWS_* variables; checked at start by webhooks.rawstore). Every call to the
# store gives up after the timeout.
CONDUIT_RAW_STORAGE = env_str("CONDUIT_RAW_STORAGE").strip()
CONDUIT_RAW_STORAGE_TIMEOUT = env_float("CONDUIT_RAW_STORAGE_TIMEOUT", 5.0, minimum=0.1)
# Links to attachments delivered by URL (a webhook's attachment_link_threshold)
# point at this address and stay valid this many seconds.
CONDUIT_PUBLIC_URL = env_str("CONDUIT_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
CONDUIT_ATTACHMENT_LINK_TTL = env_int("CONDUIT_ATTACHMENT_LINK_TTL", 24 * 3600, minimum=60)

# --- Operations: metrics, health checks (conduit.metrics, conduit.ops) -----------
# Scraping the web's /metrics needs "Authorization: Bearer <this>"; unset, only
# loopback clients may. The ingress's and the worker's ports need it too when set.
CONDUIT_METRICS_TOKEN = env_str("CONDUIT_METRICS_TOKEN")
# The ingress's and the worker's own HTTP port for /metrics, /healthz and
# /readyz (conduit.opsserver); 0 = none.
CONDUIT_METRICS_HOST = env_str("CONDUIT_METRICS_HOST", "127.0.0.1")
CONDUIT_INGRESS_METRICS_PORT = env_int("CONDUIT_INGRESS_METRICS_PORT", 0, minimum=0)
CONDUIT_WORKER_METRICS_PORT = env_int("CONDUIT_WORKER_METRICS_PORT", 0, minimum=0)
# The worker writes the time here every interval; it is ready (and
# manage.py worker_health passes) while the file is younger than the max age.
# The max age is above the longest attempt: a solo pool beats between tasks.
CONDUIT_WORKER_HEARTBEAT_FILE = env_str(
    "CONDUIT_WORKER_HEARTBEAT_FILE", str(VAR_DIR / "worker-heartbeat")
)
CONDUIT_WORKER_HEARTBEAT_INTERVAL = env_float("CONDUIT_WORKER_HEARTBEAT_INTERVAL", 5.0, minimum=0.1)
CONDUIT_WORKER_HEARTBEAT_MAX_AGE = env_float("CONDUIT_WORKER_HEARTBEAT_MAX_AGE", 60.0, minimum=1.0)

# --- Notifications (notifications/, webhooks/health.py) -------------------
# A webhook is "failing" (webhook_failing) after this many failed attempts in a row.
CONDUIT_NOTIFY_FAILING_AFTER = env_int("CONDUIT_NOTIFY_FAILING_AFTER", 3, minimum=1)
# A webhook whose every attempt failed for this long is deactivated, as a 410
# does (webhook_deactivated); 0: never for this reason.
CONDUIT_DEACTIVATE_FAILING_AFTER_HOURS = env_int(
    "CONDUIT_DEACTIVATE_FAILING_AFTER_HOURS", 5 * 24, minimum=0
)
# Notices wait this many seconds before they are sent: a recovery within it
# cancels the failure notices, and several notices become one digest mail.
CONDUIT_NOTIFY_DIGEST_SECONDS = env_float("CONDUIT_NOTIFY_DIGEST_SECONDS", 60.0, minimum=0.0)
# The shortest interval an account may choose between two notices of one
# event about one webhook or domain (its default is 60 minutes).
CONDUIT_NOTIFY_MIN_INTERVAL_MINUTES = env_int("CONDUIT_NOTIFY_MIN_INTERVAL_MINUTES", 5, minimum=1)
# Verified domains' MX and TXT are checked again this often, at most this many
# domains per run of the check (every 10 minutes): two DNS queries each.
CONDUIT_DNS_RECHECK_HOURS = env_int("CONDUIT_DNS_RECHECK_HOURS", 24, minimum=1)
CONDUIT_DNS_RECHECK_BATCH = env_int("CONDUIT_DNS_RECHECK_BATCH", 50, minimum=1)

# --- Celery ---------------------------------------------------------------
# Seconds between two looks at an empty file-system queue (embedded default only).
CONDUIT_BROKER_POLL_INTERVAL = env_float("CONDUIT_BROKER_POLL_INTERVAL", 0.05, minimum=0.01)
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT = "conduit.broker:Transport"  # kombu's Redis, fewer client objects
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Longer than the longest attempt plus queueing, so an unacked task is
        # not handed to a second worker while the first is still on it.
        "visibility_timeout": 3600,
        # Fail fast when Redis is down: the ingress must still answer, and the
        # sweep re-sends what could not be enqueued.
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
    }
else:
    # The file-system transport has no way to wake a waiting worker: the worker
    # lists the queue folder, and sleeps this long when it finds nothing. kombu's
    # default of 1 s was most of a message's time on the embedded default (median
    # 548 ms from the 250 to the webhook). Every 50 ms it costs an idle worker
    # about 1 % of a core and adds 25 ms on average (bench/embedded.py); a wake-up
    # signal (inotify, a socket) would need a transport of our own for a setup
    # meant for one machine and light traffic. Production uses Redis (REDIS_URL),
    # which blocks on the queue and has no polling at all.
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    # The transport ignores the host; naming one keeps kombu from logging "No
    # hostname was supplied" at every connection (each enqueue of the ingress).
    CELERY_BROKER_URL = "filesystem://localhost/"
    # kombu's, writing each message file atomically (see conduit/broker.py).
    CELERY_BROKER_TRANSPORT = "conduit.broker:FileSystemTransport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": CONDUIT_BROKER_POLL_INTERVAL,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A delivery's time goes mostly to waiting for the webhook's server, so the
# worker runs deliveries in threads of one process: a slow endpoint holds a
# thread, not a process of ~90 MB, and no task crosses a process boundary (the
# prefork pool's dispatch cost ~2 ms of CPU per task in bench/e2e.py). The
# Python work of one worker process uses one core; run more worker processes
# to use more (the Procfile's worker scales). `prefork` and `solo` remain.
# SQLite (local runs) gets fewer threads: its writers queue for one file lock.
CELERY_WORKER_POOL = env_choice("CONDUIT_WORKER_POOL", "threads", ("threads", "prefork", "solo"))
CELERY_WORKER_CONCURRENCY = env_int(
    "CONDUIT_WORKER_CONCURRENCY", 16 if DATABASE_URL else 4, minimum=1
)
# Without this, Celery's Django fixup closes the database connection before and
# after every task, so each delivery paid for a new PostgreSQL connection (half
# of a delivery's time in bench/e2e.py). Connections are kept (and recycled
# every this many tasks); webhooks.tasks drops broken or aged ones
# (CONN_MAX_AGE) before each task, as Django does between requests.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "sweep-deliveries": {
        "task": "webhooks.tasks.sweep_deliveries",
        "schedule": CONDUIT_SWEEP_INTERVAL,
    },
    "purge-raw-messages": {"task": "webhooks.tasks.purge_raw_messages", "schedule": 3600.0},
    # Recoveries whose next step was lost (webhooks/recovery.py) are stepped again.
    "resume-recoveries": {"task": "webhooks.tasks.resume_recoveries", "schedule": 30.0},
    "purge-audit-log": {"task": "accounts.tasks.purge_audit_log", "schedule": 6 * 3600.0},
    # Notices whose sending task was lost; webhooks that expect mail and got
    # none; verified domains' DNS, a batch at a time (notifications/).
    "send-notifications": {"task": "notifications.tasks.send_due", "schedule": 60.0},
    "check-silent-webhooks": {"task": "notifications.tasks.check_silence", "schedule": 600.0},
    "recheck-domains-dns": {"task": "notifications.tasks.recheck_domains", "schedule": 600.0},
}

# --- Email ----------------------------------------------------------------
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
# Seconds an SMTP connection may block; the mail goes out from the worker.
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 30.0, minimum=1.0)
# Where django.core.mail.backends.filebased.EmailBackend writes the messages.
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Conduit <no-reply@conduit.email>")

# --- API ------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        # Lets an operator signed in through the admin use the browsable API.
        "accounts.authentication.TwoFactorSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's JSON parser with a nesting limit (conduit.parsers).
    "DEFAULT_PARSER_CLASSES": ["conduit.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "conduit.schema.ConduitAutoSchema",
    "EXCEPTION_HANDLER": "conduit.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "password_reset": env_str("CONDUIT_PASSWORD_RESET_RATE", "5/hour"),
        "signup": env_str("CONDUIT_SIGNUP_RATE", "20/hour"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Conduit API",
    "DESCRIPTION": (
        "Conduit bridges inbound SMTP to outbound HTTP webhooks. This REST API manages "
        "accounts, sessions, webhooks, and domain ownership.\n\n"
        'Errors always have the body `{"code": "...", "error": "..."}`; validation '
        "errors (422) add `details` per field. A body that is not JSON gets 415 "
        "`unsupported_media_type`; malformed JSON, or JSON nested deeper than 32 levels, "
        "gets 400 `bad_request`; a body over 2.5 MB gets 413 `payload_too_large`; a request "
        "line over 8,190 bytes gets 414 `uri_too_long`, a header field over 8,190 bytes or "
        "more than 100 of them 431 `header_too_large`. While the database cannot be reached "
        "every operation that needs it answers 503 `service_unavailable` with `Retry-After`. "
        "Paged lists clamp `page` and `page_size` into range instead of refusing them.\n\n"
        "Webhook deliveries in the default format follow a published JSON Schema, "
        "[/api/v1/schemas/payload/v1.json](/api/v1/schemas/payload/v1.json): version 1 only "
        "gains keys (ignore the ones you do not know); a breaking change would be published "
        "as v2 beside it."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's assets are served from this install, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "RecoveryStateEnum": "webhooks.models.RecoveryJob.State",
        "RecoverableStatusEnum": "webhooks.recovery.RECOVERABLE_CHOICES",
        "PayloadFormatEnum": "webhooks.models.PayloadFormat",
        "StatusEnum": "webhooks.serializers.DELIVERY_STATUSES",
        "NotificationEventEnum": "notifications.models.EVENT_CHOICES",
        "NotificationStatusEnum": "notifications.models.Notification.Status",
    },
    "AUTHENTICATION_WHITELIST": ["accounts.authentication.BearerTokenAuthentication"],
    "TAGS": [
        {"name": "General", "description": "General system endpoints"},
        {"name": "Sessions", "description": "Authentication and session management"},
        {"name": "Accounts", "description": "Account management operations"},
        {"name": "Domains", "description": "Domain management operations"},
        {"name": "SMTP Policies", "description": "SMTP security policy management"},
        {"name": "Webhooks", "description": "Webhook management and delivery logs"},
        {"name": "2FA", "description": "Two-factor authentication"},
        {"name": "API Tokens", "description": "Long-lived API token management"},
        {"name": "Notifications", "description": "Alerts when a webhook or domain needs you"},
    ],
}

# --- Static, i18n, logging ---------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # No manifest: the admin renders even before collectstatic has run.
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Date and time formats shown in the admin (times to the second): conduit/formats/.
FORMAT_MODULE_PATH = "conduit.formats"

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if CONDUIT_TRUSTED_PROXIES else None

# plain: one line of text per record; json: one JSON object per line, with the
# message, delivery and webhook ids where the code passed them (conduit.logs).
CONDUIT_LOG_FORMAT = env_choice("CONDUIT_LOG_FORMAT", "plain", ("plain", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "conduit.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": CONDUIT_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        # aiosmtpd logs every SMTP command and connection event at INFO (a dozen
        # lines per session, addresses included); the ingress writes one line
        # per session itself (conduit.ingress). CONDUIT_SMTP_TRACE=true brings
        # the protocol trace back for debugging.
        "mail.log": {"level": "INFO" if env_bool("CONDUIT_SMTP_TRACE", False) else "WARNING"},
        # requests-hardened logs the address a refused webhook host resolved to,
        # and urllib3 (at DEBUG) the pinned address of every connection; error
        # messages and logs must not tell what an internal name points at.
        "requests_hardened": {"level": "ERROR"},
        "urllib3": {"level": "WARNING"},
    },
}

# Errors to Sentry (the optional extra: pip install 'conduit[sentry]'); off when unset.
SENTRY_DSN = env_str("SENTRY_DSN")
if SENTRY_DSN:
    init_sentry(SENTRY_DSN)
