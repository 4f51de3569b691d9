"""The API's rate limits: writes per user, and sign-ins per address (settings' DEFAULT_THROTTLE_RATES).

Each limit counts requests in fixed windows of its period (``10/min``: minute by minute), one counter
per client and window, in the cache: on Redis an INCR and an EXPIRE in one round trip, whatever the
rate. (DRF's own throttles keep a list of every request's time in the window and read and write it
whole on each request, so their cost grows with the rate.) A client may get up to twice its limit
across the boundary of two windows; the limit is a guard against floods, not a quota.
"""

import logging
import time
from typing import Any

import redis
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


class _Throttle(SimpleRateThrottle):
    """Counts in the cache (Redis). With Redis down it lets requests through: the API keeps taking
    orders while Redis is away (the relay publishes them later), so a limit must not turn into an outage."""

    def get_rate(self) -> str | None:
        # Read when used, not at import as DRF does, so a settings change applies.
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or "")
        return None if rate is None else str(rate)

    window_ends = 0.0

    def allow_request(self, request: Request, view: Any) -> bool:
        limit, period = self.parse_rate(self.get_rate())
        key = self.get_cache_key(request, view)
        if limit is None or period is None or key is None:
            return True
        window = int(time.time() // period)
        self.window_ends = float((window + 1) * period)
        try:
            count = _count(f"{key}:{window}", ttl=period + 1)
        except redis.RedisError as exc:
            logger.warning("throttle %s not applied: %s", self.scope, exc)
            return True
        return count <= limit

    def wait(self) -> float:
        """Seconds until the window ends (the Retry-After header)."""
        return max(self.window_ends - time.time(), 0.0)


def _count(key: str, *, ttl: int) -> int:
    """Add one to the window's counter and return it: one round trip on Redis."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        name = cache.make_key(key)
        # Django's RedisCache has no single call for "increment, creating it with an expiry".
        pipe = _client(cache).pipeline(transaction=False)
        pipe.incr(name)
        pipe.expire(name, ttl)
        count, _ = pipe.execute()
        return int(count)
    cache.add(key, 0, ttl)
    return cache.incr(key)


def _client(cache: RedisCache) -> redis.Redis:
    """The cache's client for writes, built once per cache connection (``caches`` gives each thread its
    own): Django's ``get_client`` builds a new ``redis.Redis`` on every call, 86 us of CPU here, a quarter of
    the INCR and EXPIRE's round trip."""
    connection = cache._cache
    client: redis.Redis | None = connection.__dict__.get("_throttle_client")
    if client is None:
        client = connection.__dict__["_throttle_client"] = connection.get_client(write=True)
    return client


class WriteRateThrottle(_Throttle):
    """Writes (POST, PUT, PATCH, DELETE) per signed-in user, or per address; reads are free."""

    scope = "write"

    def allow_request(self, request: Request, view: Any) -> bool:
        return request.method in SAFE_METHODS or super().allow_request(request, view)

    def get_cache_key(self, request: Request, view: Any) -> str:
        ident = request.user.pk if request.user and request.user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class SignInRateThrottle(_Throttle):
    """Attempts to get a token, per client address: guessing passwords stays slow."""

    scope = "auth"

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
