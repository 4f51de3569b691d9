from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.log import log_response

from eventing.contract import context

HEADER = "X-Correlation-ID"


class CorrelationIdMiddleware:
    """Takes the correlation id from the request header, or makes a new one,
    binds it for the request (and the log line of a refused one) and echoes it on the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        correlation_id = context.valid_correlation_id(request.headers.get(HEADER)) or context.new_correlation_id()
        with context.bind(correlation_id=correlation_id):
            response = self.get_response(request)
            if response.status_code >= 400:
                # Django logs a refused request once every middleware has returned, when no id is bound any
                # more: logged here, in Django's words, it carries the request's id (a response is logged once).
                log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        response[HEADER] = correlation_id
        return response
