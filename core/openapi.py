"""The OpenAPI contract's shared parts: the error bodies, the token scheme, responses with links, and the
schema class that writes links out. Each view declares its own operation with ``@extend_schema``.

The error bodies are those of ``core.exceptions.exception_handler``: ``{"detail": "…"}`` for 401, 403, 404,
409 and a malformed body's 400, and field errors for input that breaks a rule."""

import inspect
from typing import Any

from drf_spectacular import openapi
from drf_spectacular.authentication import TokenScheme
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import Direction, OpenApiResponse, PolymorphicProxySerializer
from rest_framework import serializers
from rest_framework.permissions import SAFE_METHODS

from core.throttling import WriteRateThrottle

Link = dict[str, Any]


class ErrorSerializer(serializers.Serializer[Any]):
    """What went wrong, in one sentence."""

    detail = serializers.CharField()


class FieldErrorsSerializer(serializers.Serializer[Any]):
    """Input that breaks a rule: each bad field names its messages. A list's field holds the messages of each
    bad item under the item's index (from 0), or the list's own messages under ``non_field_errors``."""


class FieldErrorsExtension(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]  # registers itself
    """DRF's field errors are a recursive map, which no serializer field describes."""

    target_class = FieldErrorsSerializer

    def map_serializer(self, auto_schema: openapi.AutoSchema, direction: str) -> dict[str, Any]:
        itself = {"$ref": "#/components/schemas/FieldErrors"}
        messages = {"type": "array", "items": {"oneOf": [{"type": "string"}, itself]}}
        return {
            "type": "object",
            "description": inspect.cleandoc(FieldErrorsSerializer.__doc__ or ""),
            "minProperties": 1,
            "additionalProperties": {"oneOf": [messages, itself]},
            "example": {"lines": {"1": {"sku": ["Unknown sku 'NOPE-1'."]}}},
        }

    def get_name(self, auto_schema: openapi.AutoSchema, direction: str) -> str:
        return "FieldErrors"


BAD_REQUEST = PolymorphicProxySerializer(
    component_name="BadRequest",
    serializers=[ErrorSerializer, FieldErrorsSerializer],
    resource_type_field_name=None,
)


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


def bad_request(description: str) -> OpenApiResponse:
    return OpenApiResponse(BAD_REQUEST, description=f"{description} Malformed JSON: a `detail`.")


UNAUTHENTICATED = error("No credentials, or a bad or unknown token.")
# DRF names the scheme of its first authentication class, the token, on every 401.
WWW_AUTHENTICATE = {"schema": {"type": "string", "enum": ["Token"]}, "required": True, "description": "`Token`"}
CSRF_FAILED = "With session authentication, a write without the CSRF token."
STAFF_ONLY = error("The user is not staff.")
STAFF_WRITE = error(f"The user is not staff. {CSRF_FAILED}")
CSRF_ONLY = error(CSRF_FAILED)
NO_CUSTOMER_ID = error("No customer id is free for the user's first order (a clash of generated ids).")
PAGE_NOT_FOUND = "`page` is past the last page."
THROTTLED = error("Too many requests: the view's throttle refused this one.")
RETRY_AFTER = {"schema": {"type": "integer"}, "description": "Seconds until the throttle lets a request through."}


class LinkedResponse(OpenApiResponse):
    """A response with OpenAPI links: where a client goes next with what it got back. Schemathesis's stateful
    tests follow them."""

    def __init__(self, response: Any, description: str, *, links: dict[str, Link]) -> None:
        super().__init__(response, description)
        self.links = links


def link(operation_id: str, description: str, **parameters: str) -> Link:
    """A link to ``operation_id`` whose parameters are runtime expressions such as ``$response.body#/id``."""
    return {"operationId": operation_id, "parameters": parameters, "description": description}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema class, naming components after their views, writing out the links of a
    ``LinkedResponse`` and the ``WWW-Authenticate`` header of every 401, and adding the 429 of a view that
    has throttles."""

    def _get_response_bodies(self, direction: Direction = "response") -> dict[str, Any]:
        # Below @extend_schema, which replaces get_response_serializers() without calling it.
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        if self._throttled() and "429" not in responses:
            responses["429"] = self._get_response_for_code(THROTTLED, "429", direction=direction)
        return responses

    def _throttled(self) -> bool:
        """Whether a throttle of the view applies to this method (the write limit leaves reads alone)."""
        reads_free = self.method.upper() in SAFE_METHODS
        return any(
            not (reads_free and isinstance(throttle, WriteRateThrottle)) for throttle in self.view.get_throttles()
        )

    def get_serializer_name(self, serializer: serializers.Serializer[Any], direction: str) -> str:
        # Every view nests its own InputSerializer and OutputSerializer: the view's name makes each unique.
        # OrderDetailApi.OutputSerializer.LineSerializer is "OrderDetailLine"; a request's name gets "Request".
        parts = type(serializer).__qualname__.split(".")
        nested = (part for part in parts if part not in ("InputSerializer", "OutputSerializer"))
        return "".join(part.removesuffix("Serializer").removesuffix("Api") for part in nested)

    def _is_list_view(self, serializer: Any = None) -> bool:
        # drf-spectacular looks for a list serializer in the first response without unwrapping an
        # OpenApiResponse, so a list view declared with one would lose its page parameters.
        if serializer is None:
            serializer = self.get_response_serializers()
        if isinstance(serializer, dict) and serializer:
            by_code = {str(code): response for code, response in serializer.items()}
            serializer = by_code[min(by_code)]
        if isinstance(serializer, OpenApiResponse):
            serializer = serializer.response
        return bool(super()._is_list_view(serializer))

    def _get_response_for_code(
        self, serializer: Any, status_code: str, media_types: Any = None, direction: str = "response"
    ) -> dict[str, Any]:
        response: dict[str, Any] = super()._get_response_for_code(  # type: ignore[no-untyped-call]  # untyped upstream
            serializer, status_code, media_types, direction
        )
        if isinstance(serializer, LinkedResponse):
            response["links"] = serializer.links
        if status_code == "401":
            response.setdefault("headers", {})["WWW-Authenticate"] = WWW_AUTHENTICATE
        if status_code == "429":
            response.setdefault("headers", {})["Retry-After"] = RETRY_AFTER
        return response


class DocumentedTokenScheme(TokenScheme):  # type: ignore[no-untyped-call]  # registers itself
    """The token scheme, saying where a token comes from."""

    priority = 0

    def get_security_definition(self, auto_schema: openapi.AutoSchema) -> dict[str, str]:
        definition: dict[str, str] = super().get_security_definition(auto_schema)  # type: ignore[no-untyped-call]
        definition["description"] = (
            "`Authorization: Token <key>`. POST a username and password to /api/auth/token/ for the key."
        )
        return definition
