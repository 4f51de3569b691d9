"""The process's Redis clients, built from settings.REDIS_URL."""

from functools import cache
from urllib.parse import urlsplit, urlunsplit

import redis
from django.conf import settings


@cache
def _client(url: str, socket_timeout: float | None, decode_responses: bool) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=decode_responses,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout or 5.0, 5.0),
        health_check_interval=30,
    )


def get_redis(*, socket_timeout: float | None = 10.0, decode_responses: bool = True) -> redis.Redis:
    """A shared client. Blocking readers pass a timeout above their BLOCK time. Replies are text, or
    bytes with ``decode_responses=False``: what a stream holds need not be UTF-8, and only bytes read it all."""
    return _client(settings.REDIS_URL, socket_timeout, decode_responses)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))
