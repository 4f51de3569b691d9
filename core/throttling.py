"""The API's rate limits: writes per user, and sign-ins per address (settings' DEFAULT_THROTTLE_RATES)."""

import logging
from typing import Any

import redis
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

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except redis.RedisError as exc:
            logger.warning("throttle %s not applied: %s", self.scope, exc)
            return True


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
