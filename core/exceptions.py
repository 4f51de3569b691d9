"""Domain error base classes and the one DRF exception handler mapping them to HTTP.

Apps raise subclasses from their services; views never translate errors.
"""

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    """Input breaks a domain rule; carries DRF-style field errors."""

    def __init__(self, field_errors: dict[str, Any]) -> None:
        super().__init__("invalid input")
        self.field_errors = field_errors


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND


class Conflict(DomainError):
    """The request is valid but the current state does not allow it."""

    status_code = status.HTTP_409_CONFLICT


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, InvalidInput):
        return Response(exc.field_errors, status=exc.status_code)
    if isinstance(exc, DomainError):
        return Response({"detail": exc.message}, status=exc.status_code)
    if isinstance(exc, drf_exceptions.ParseError):
        return Response({"detail": f"Malformed JSON: {exc.detail}"}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 for a URL that no view matches, such as a path parameter out of bounds: JSON under
    /api/, as every other API error is. Django uses it when DEBUG is off; with DEBUG, its debug page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)
