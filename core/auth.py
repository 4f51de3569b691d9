"""Obtaining an API token."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import parsers, serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from core.openapi import CSRF_ONLY, UNAUTHENTICATED, bad_request
from core.parsers import JSONParser
from core.throttling import SignInRateThrottle


class TokenApi(ObtainAuthToken):
    """A user's API token, for their username and password."""

    # DRF's view, with the project's JSON parser: DRF's own let a deeply nested body through as a 500.
    parser_classes = (parsers.FormParser, parsers.MultiPartParser, JSONParser)
    # DRF's view has none, which allows anyone as well; this one tells the schema that no credentials are needed.
    permission_classes = (AllowAny,)
    # Guessing passwords stays slow: a few tries a minute per address (DJANGO_THROTTLE_AUTH_RATE).
    throttle_classes = (SignInRateThrottle,)

    class OutputSerializer(serializers.Serializer[Any]):
        token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")

    @extend_schema(
        operation_id="auth_token_create",
        summary="Get the API token of a user",
        description="The user's token, made on first request; the same token every time after.",
        request=AuthTokenSerializer,
        responses={
            200: OutputSerializer,
            400: bad_request("A missing field, or a username and password that do not sign in."),
            401: UNAUTHENTICATED,
            403: CSRF_ONLY,
        },
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)
