"""One settings file, read through django-environ.

Development defaults point at the services `scripts/services start` runs, so
`manage.py` works with no `.env`. A `.env` file is read only when
DJANGO_READ_DOT_ENV_FILE=true.
"""

from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

# Lets the code write ModelAdmin[Model] and other generics that Django's classes do not subscript by themselves.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if env.bool("DJANGO_READ_DOT_ENV_FILE", default=False):
    env.read_env(str(BASE_DIR / ".env"))


def per_consumer_counts(name: str) -> dict[str, int]:
    """The variable ``name`` read as comma-separated ``consumer=count`` pairs ("inventory=3,orders=8").

    (django-environ's typed env.dict splits its pairs on ";", not on ",".)"""
    pairs: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in env.str(name, default="").split(","))):
        consumer, _, count = (piece.strip() for piece in item.partition("="))
        if not consumer or not count.isdigit():
            raise ImproperlyConfigured(
                f'{name}: {item!r} is not consumer=<whole number>; write it as {name}="inventory=3,orders=8"'
            )
        pairs[consumer] = int(count)
    return pairs


# GENERAL
# ------------------------------------------------------------------------------
# Off unless asked for: `make run` and `make test` ask (a local development run), nothing else does.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
TIME_ZONE = "UTC"
USE_TZ = True
LANGUAGE_CODE = "en-us"
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# SECURITY
# ------------------------------------------------------------------------------
_DEV_SECRET_KEY = "dev-only-insecure-key-change-me"
SECRET_KEY = env("DJANGO_SECRET_KEY", default=_DEV_SECRET_KEY if DEBUG else "")
if not DEBUG and SECRET_KEY in ("", _DEV_SECRET_KEY):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to a real secret when DJANGO_DEBUG is false")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
# HTTPS. Without DEBUG every default is the secure one; each can be set from the environment.
# Behind a proxy that terminates TLS, set DJANGO_SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https
# (only if the proxy always sets or strips that header), or the redirect below never ends.
SECURE_PROXY_SSL_HEADER = env.tuple("DJANGO_SECURE_PROXY_SSL_HEADER", default=None) or None
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
# A day by default: long enough to count, short enough to back out of. Raise it (and set the two
# below) once HTTPS is known to work for the domain and every subdomain.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 86_400)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=not DEBUG)
# Origins (scheme and host) whose forms may post to the admin, e.g. https://shop.example.com.
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Probes and scrapers talk plain HTTP inside the network; everything else is sent to HTTPS.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# What Prometheus sends as a bearer token to scrape /metrics (staff users may read it too).
METRICS_TOKEN = env("METRICS_TOKEN", default="")
# Error pages and mails mask the backing services' URLs too: they carry passwords.
DEFAULT_EXCEPTION_REPORTER_FILTER = "core.debug.SecretsFilter"
# `seed_demo` (local development only) gives its accounts these passwords, or generates them.
DEMO_PASSWORD = env("DEMO_PASSWORD", default="")
DEMO_CUSTOMER_PASSWORD = env("DEMO_CUSTOMER_PASSWORD", default="")
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# APPS
# ------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI's assets, served with our own static files: /api/docs/ needs no CDN and works offline.
    "drf_spectacular_sidecar",
    "eventing",
    "orders",
    "inventory",
]

MIDDLEWARE = [
    "eventing.middleware.CorrelationIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from the web server itself, before the session and auth work they do not need.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

STATIC_URL = "static/"
# `manage.py collectstatic` fills it (`make run` does); WhiteNoise serves it.
STATIC_ROOT = BASE_DIR / "build" / "static"
if not DEBUG:
    # Hashed, compressed copies cached for good by browsers. Only in production: the manifest
    # needs collectstatic first, which the tests and development do not run (with DEBUG,
    # WhiteNoise serves the apps' files directly).
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

# DATABASES
# ------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Keep connections open across requests and consumer batches: reconnecting (and, on SQLite,
# re-running the PRAGMAs) per batch cost more than the batch. Each is checked before reuse.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's backend, with the write lock taken in short polls (core/sqlite/base.py).
    DATABASES["default"]["ENGINE"] = "core.sqlite"
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # WAL lets the web server, relay and consumers read while one writes;
            # IMMEDIATE takes the write lock at BEGIN so two writers queue on the
            # busy timeout instead of failing a lock upgrade mid-transaction.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    DATABASES["default"].setdefault("TEST", {})
    if env("DJANGO_TEST_DB_NAME", default=""):
        DATABASES["default"]["TEST"]["NAME"] = env("DJANGO_TEST_DB_NAME")

# REDIS / EVENTING
# ------------------------------------------------------------------------------
# redis://host:port/0 for one Redis; redis+cluster://host:port/0 (rediss+cluster:// for TLS) for a Redis
# Cluster, any of its nodes as the seed (docs/scaling.md).
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6380/0")
REDIS_IS_CLUSTER = REDIS_URL.partition("://")[0] in ("redis+cluster", "rediss+cluster")
# On a cluster with one partition, write the name with braces ({events-stream}): its keys need a hash tag.
EVENTING_STREAM = env("EVENTING_STREAM", default="events-stream")
# Streams the bus is split into; an aggregate's events all go to one of them, in order. One keeps the
# single stream of old. More let a Redis Cluster spread the bus over its masters (each partition has its
# own hash tag). Change it only by the drain procedure in docs/scaling.md.
EVENTING_PARTITIONS = env.int("EVENTING_PARTITIONS", default=1)
# With several partitions, the processes of a group split them through leases in Redis that live this
# long unless renewed (every third of it): a crashed process's partitions move within two lease periods,
# and a process paused longer than one is fenced off. 0 turns leases off (every process reads every
# partition, competing for entries as with one partition).
EVENTING_LEASE_TTL_MS = env.int("EVENTING_LEASE_TTL_MS", default=10_000)
# Entries per XREADGROUP call, and how long one call blocks waiting for new ones.
# The block time also bounds how long SIGTERM waits for an idle consumer.
EVENTING_READ_COUNT = env.int("EVENTING_READ_COUNT", default=100)
EVENTING_BLOCK_MS = env.int("EVENTING_BLOCK_MS", default=1000)
# Entries whose relational effects commit in one transaction, at most, and the time a transaction aims to
# stay under: each chunk takes as many entries as the last one's time per entry fits in it
# (eventing.consumer.applying.ChunkSize). Fewer commits raise throughput: on SQLite a commit costs about
# what 50 inbox rows do, and committing a whole read batch at once about halves the inbox's cost per event
# (bench/consumer_throughput.py). But the first event of a chunk waits for the whole chunk, and on SQLite
# every other writer (the web's POSTs) waits for the write lock a chunk holds. 10 ms is about what a chunk
# of 20 (the fixed size before) held it with a handler making one write per event (0.37 ms each on SQLite
# here): such handlers keep the waits they had, and quick ones commit up to 100 at once.
EVENTING_COMMIT_EVERY = env.int("EVENTING_COMMIT_EVERY", default=100)
EVENTING_COMMIT_MS = env.float("EVENTING_COMMIT_MS", default=10.0)

# How long a consumer's batch that waited for its first entry and came short of EVENTING_READ_COUNT waits for
# more entries (entries already waiting are taken at once), per consumer
# (as "projections=30,inventory=0"); a consumer not named keeps its declared linger (projections: 10 ms).
EVENTING_LINGER_MS_BY_CONSUMER = per_consumer_counts("EVENTING_LINGER_MS_BY_CONSUMER")
# Deliveries of a failing event before it is dead-lettered; per consumer with
# EVENTING_MAX_ATTEMPTS_BY_CONSUMER="inventory=3,orders=8".
EVENTING_MAX_ATTEMPTS = env.int("EVENTING_MAX_ATTEMPTS", default=5)
EVENTING_MAX_ATTEMPTS_BY_CONSUMER = per_consumer_counts("EVENTING_MAX_ATTEMPTS_BY_CONSUMER")
# Backoff between deliveries of a failing event: base * 2^(attempt-1), capped.
EVENTING_RETRY_BASE_MS = env.int("EVENTING_RETRY_BASE_MS", default=500)
EVENTING_RETRY_MAX_MS = env.int("EVENTING_RETRY_MAX_MS", default=30_000)
# An entry idle this long under another consumer is taken over: that consumer
# is presumed dead. Must be well above the slowest handler's time (handlers take
# milliseconds; a batch of EVENTING_READ_COUNT a few seconds at most), or a slow
# but live consumer's entries would be processed twice.
EVENTING_CLAIM_IDLE_MS = env.int("EVENTING_CLAIM_IDLE_MS", default=60_000)
EVENTING_CLAIM_INTERVAL_MS = env.int("EVENTING_CLAIM_INTERVAL_MS", default=10_000)
# Larger stream entries (the names and values of all their fields) are dead-lettered unread. A dead
# letter's record keeps entries of up to twice this; the dead-letter stream keeps every one.
EVENTING_MAX_PAYLOAD_BYTES = env.int("EVENTING_MAX_PAYLOAD_BYTES", default=1_048_576)
# Outbox rows the relay publishes per pipelined XADD round trip.
EVENTING_RELAY_BATCH_SIZE = env.int("EVENTING_RELAY_BATCH_SIZE", default=500)
# How often the relay looks for unpublished rows when it found none last time.
EVENTING_RELAY_POLL_SECONDS = env.float("EVENTING_RELAY_POLL_SECONDS", default=0.2)
# Rows younger than this are left to the process that committed them, which
# publishes right after commit; the relay takes what that process failed to.
EVENTING_RELAY_GRACE_SECONDS = env.float("EVENTING_RELAY_GRACE_SECONDS", default=2.0)
# Longest pause of a consumer or the relay while a backing service is down.
EVENTING_MAX_BACKOFF_SECONDS = env.float("EVENTING_MAX_BACKOFF_SECONDS", default=30.0)
# Modules of handlers outside the apps (plugins, test doubles of consumers),
# imported by EventingConfig.ready() like every app's handlers.py.
EVENTING_EXTRA_HANDLER_MODULES = env.list("EVENTING_EXTRA_HANDLER_MODULES", default=[])
# How often the relay trims what every consumer group has acked.
EVENTING_TRIM_INTERVAL_SECONDS = env.float("EVENTING_TRIM_INTERVAL_SECONDS", default=60.0)
# After a Redis restart, events published up to this long before the last
# entry that survived are published again (covers clock skew between hosts).
EVENTING_REPUBLISH_MARGIN_SECONDS = env.float("EVENTING_REPUBLISH_MARGIN_SECONDS", default=2.0)
# How long a published outbox row is kept. After a Redis restart the relay
# re-sends the rows published since the last entry that survived, so this is how
# far back a Redis may come back from (its AOF loses a second; a restored backup
# hours). A day covers a backup taken daily and leaves the admin a day of outbox.
EVENTING_OUTBOX_RETENTION_SECONDS = env.int("EVENTING_OUTBOX_RETENTION_SECONDS", default=86_400)
# How long an inbox row (this consumer applied that event) is kept: as long as a
# copy of the event may still arrive — re-published from the outbox (above), a
# duplicate read late by a group that was stopped, reclaimed, or a dead letter
# retried from the admin. A week: the outbox day plus a long weekend of a stopped
# consumer. A system check refuses less than the outbox retention plus the
# prune interval, EVENTING_CLAIM_IDLE_MS and the republish margin.
EVENTING_INBOX_RETENTION_SECONDS = env.int("EVENTING_INBOX_RETENTION_SECONDS", default=604_800)
# How often the relay deletes expired outbox and inbox rows: each pass then has a
# minute of traffic to delete, a few short DELETEs.
EVENTING_PRUNE_INTERVAL_SECONDS = env.float("EVENTING_PRUNE_INTERVAL_SECONDS", default=60.0)
# Socket timeout for Redis calls made right after a commit: a request must not
# hang on a dead Redis, the relay publishes the rows later.
EVENTING_PUBLISH_TIMEOUT_SECONDS = env.float("EVENTING_PUBLISH_TIMEOUT_SECONDS", default=0.5)

# MONGODB
# ------------------------------------------------------------------------------
MONGODB_URI = env("MONGODB_URI", default="mongodb://127.0.0.1:27018/eventmono")
# Connecting and selecting a server: how soon an unreachable MongoDB counts as down.
MONGODB_TIMEOUT_MS = env.int("MONGODB_TIMEOUT_MS", default=5000)
# One reply: FerretDB scans a collection for any filter but _id, which takes
# seconds on a large event log (a rebuild's catch-up); MongoDB answers from an index.
MONGODB_SOCKET_TIMEOUT_MS = env.int("MONGODB_SOCKET_TIMEOUT_MS", default=60_000)

# CACHES
# ------------------------------------------------------------------------------
# Only the API's throttles use the cache; Redis lets every web worker share their counts. Django's
# RedisCache speaks to one Redis, not a cluster: with REDIS_URL on a cluster, point CACHE_URL at a
# standalone Redis, or the counts fall back to each process's memory (a limit then applies per web
# worker; system check eventing.W001 says so).
CACHE_URL = env("CACHE_URL", default="" if REDIS_IS_CLUSTER else REDIS_URL)
if CACHE_URL.partition("://")[0].endswith("+cluster"):
    raise ImproperlyConfigured("CACHE_URL must name a standalone Redis: Django's RedisCache cannot use a cluster")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache"
        if CACHE_URL
        else "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": CACHE_URL or "throttles",
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="eventmono"),
        "TIMEOUT": 300,
    }
}

# DJANGO REST FRAMEWORK
# ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an anonymous request gets 401 with WWW-Authenticate: Token.
        "core.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "core.exceptions.exception_handler",
    # Per user (per address when signed out), counted in Redis so every web worker shares the count.
    "DEFAULT_THROTTLE_CLASSES": ["core.throttling.WriteRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        # Guessing passwords: a person signs in a few times a minute at most.
        "auth": env("DJANGO_THROTTLE_AUTH_RATE", default="10/min"),
        # Placing, cancelling, stocking: twenty a second is far above a person and a sane script,
        # and still stops a runaway client from flooding the bus. Reads are not throttled.
        "write": env("DJANGO_THROTTLE_WRITE_RATE", default="1200/min"),
    },
    "DEFAULT_PAGINATION_CLASS": "core.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "core.openapi.AutoSchema",
}

# API SCHEMA (drf-spectacular)
# ------------------------------------------------------------------------------
SPECTACULAR_SETTINGS = {
    "TITLE": "eventmono API",
    "DESCRIPTION": (
        "Orders and stock. A write answers at once (201, 202) and the read views follow asynchronously: what was "
        "just written may be a 404 to read for a moment. Sign in with `Authorization: Token <key>` (the key from "
        'POST /api/auth/token/) or a session. An error is `{"detail": …}`, or field errors for input that '
        "breaks a rule. Every response carries `X-Correlation-ID`; send one to choose it."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Separate request components: a request never shows a response's read-only fields as required.
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"OrderStatus": "orders.models.Order.Status"},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# LOGGING
# ------------------------------------------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
# `plain` for people (the default), `json` for a log pipeline: one object per line with the correlation
# id, the trace and span ids and the event id.
LOG_FORMAT = env("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "correlation_id": {"()": "eventing.contract.context.CorrelationIdFilter"},
        "trace_context": {"()": "eventing.monitoring.logs.TraceContextFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)-7s [%(correlation_id)s] %(name)s: %(message)s"},
        "json": {"()": "eventing.monitoring.logs.JsonLogFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["correlation_id", "trace_context"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
