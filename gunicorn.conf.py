"""gunicorn's settings for the web process (the Procfile's `web`, `make run`).

Read from the environment like config/settings.py. Any other gunicorn setting
can be given on the command line or in GUNICORN_CMD_ARGS, which override this file.
"""

import os

import environ

env = environ.Env()

wsgi_app = "config.wsgi:application"
# Loopback by default, like runserver; `--bind 0.0.0.0:8000` (in GUNICORN_CMD_ARGS) to listen on all interfaces.
bind = [f"127.0.0.1:{env.int('PORT', default=8000)}"]


def _cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Sync workers, one request at a time each: gunicorn's usual 2 per core + 1 keeps
# every core busy while some workers wait on the database, Redis or MongoDB.
workers = env.int("WEB_CONCURRENCY", default=2 * _cores() + 1)
# A worker silent this long is killed and replaced. Requests take milliseconds;
# the slowest (an event-log listing that FerretDB answers by a scan) a few seconds.
timeout = env.int("GUNICORN_TIMEOUT", default=30)
# After SIGTERM, in-flight requests get this long to finish before their worker
# is killed: below the 30 s Kubernetes waits by default before SIGKILL, so
# gunicorn, not the supervisor, ends the stragglers and exits cleanly.
graceful_timeout = env.int("GUNICORN_GRACEFUL_TIMEOUT", default=25)

# LOGGING
# ------------------------------------------------------------------------------
loglevel = env("LOG_LEVEL", default="INFO").lower()
accesslog = "-"
# The correlation id is the X-Correlation-ID response header that
# eventing.middleware.CorrelationIdMiddleware sets; %(M)s is the duration in ms.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms [%({x-correlation-id}o)s] "%(a)s"'

# The control socket (gunicornc) defaults to one path per user, which every
# gunicorn on the machine would take from the others (tests run several).
control_socket_disable = True


# WORKERS
# ------------------------------------------------------------------------------
def post_worker_init(worker: object) -> None:
    """Before a worker takes requests: load every view (the URL patterns import them), then collect once and
    keep that heap out of later collections (core/heap.py)."""
    from django.urls import get_resolver

    from core.heap import freeze_startup_heap

    get_resolver().url_patterns  # noqa: B018 - importing every view is the point
    freeze_startup_heap()


# METRICS
# ------------------------------------------------------------------------------
def child_exit(server: object, worker: object) -> None:
    """A worker's gauges stop counting when it exits (prometheus-client's multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
