"""The process's Redis clients, built from settings.REDIS_URL."""

from functools import cache
from urllib.parse import urlsplit, urlunsplit

import redis
from django.conf import settings
from redis.exceptions import AuthenticationWrongNumberOfArgsError, NoPermissionError

# Redis refusing this process's credentials (a wrong password, an ACL user without the rights it
# needs). Retrying cannot help, so processes stop with a clear error instead of backing off
# forever. Caught before redis.ConnectionError, of which AuthenticationError is a kind.
CREDENTIAL_ERRORS: tuple[type[redis.RedisError], ...] = (
    redis.AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    NoPermissionError,
)


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


def credentials_refused(exc: redis.RedisError) -> str:
    """What to tell an operator whose REDIS_URL Redis refuses, without its password."""
    return (
        f"Redis at {redact_url(settings.REDIS_URL)} refused this process's credentials ({exc}); "
        "fix the user and password in REDIS_URL, or the user's ACL rules. Not retrying."
    )


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))
