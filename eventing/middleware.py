from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from eventing.contract import context

HEADER = "X-Correlation-ID"


class CorrelationIdMiddleware:
    """Takes the correlation id from the request header, or makes a new one,
    binds it for the request and echoes it on the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        correlation_id = context.valid_correlation_id(request.headers.get(HEADER)) or context.new_correlation_id()
        with context.bind(correlation_id=correlation_id):
            response = self.get_response(request)
        response[HEADER] = correlation_id
        return response
