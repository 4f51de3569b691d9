import logging

import pytest
from rest_framework.test import APIClient

from eventing.contract import context


@pytest.mark.parametrize("header", [None, "", "has spaces", "x" * 200, "bad\u00e9char"])
def test_a_missing_or_unusable_correlation_header_gets_a_new_id(api, header):
    headers = {"HTTP_X_CORRELATION_ID": header} if header is not None else {}
    response = api.get("/api/orders/?customer_id=c", **headers)
    issued = response["X-Correlation-ID"]
    assert issued and issued != header
    assert context.valid_correlation_id(issued) == issued


def test_a_usable_correlation_header_is_echoed(api):
    response = api.get("/api/orders/?customer_id=c", HTTP_X_CORRELATION_ID="req-42.a:b")
    assert response["X-Correlation-ID"] == "req-42.a:b"


def test_log_records_carry_the_bound_correlation_id(caplog):
    caplog.handler.addFilter(context.CorrelationIdFilter())
    logger = logging.getLogger("tests.correlation")
    with caplog.at_level(logging.INFO), context.bind(correlation_id="corr-1", causation_id="evt-1"):
        logger.info("inside")
        assert context.get_causation_id() == "evt-1"
    logger.info("outside")
    assert [(r.getMessage(), r.correlation_id) for r in caplog.records] == [("inside", "corr-1"), ("outside", "-")]


@pytest.mark.parametrize(
    ("client", "path", "status"),
    [("api", "/api/orders/00000000-0000-0000-0000-000000000000/", 404), ("anonymous", "/api/orders/", 401)],
)
def test_a_refused_request_is_logged_once_with_its_correlation_id(request, caplog, client, path, status):
    caplog.handler.addFilter(context.CorrelationIdFilter())
    http = request.getfixturevalue("api") if client == "api" else APIClient()
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = http.get(path, HTTP_X_CORRELATION_ID="refused-1")
    assert response.status_code == status
    logged = [record for record in caplog.records if record.name == "django.request"]
    assert [(r.getMessage(), r.correlation_id) for r in logged] == [(f"{response.reason_phrase}: {path}", "refused-1")]
