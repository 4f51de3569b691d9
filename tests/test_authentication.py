"""The API's token authentication (core/authentication.py): DRF's answers, in one SQL query."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.authentication import TokenAuthentication

pytestmark = pytest.mark.django_db

ORDERS = "/api/orders/"


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_token_signs_in_as_its_user_in_one_query(staff, django_assert_num_queries):
    token = Token.objects.create(user=staff)

    with django_assert_num_queries(1):
        user, auth = TokenAuthentication().authenticate_credentials(token.key)

    assert (user.pk, user.username, user.is_staff, user.is_active) == (staff.pk, "staff", True, True)
    assert user.check_password("pw-staff")  # every column read, the password hash too
    assert (auth.key, auth.user) == (token.key, user)
    response = with_token(token.key).get(ORDERS, {"customer_id": "nobody"})
    assert response.status_code == 200, response.content
    assert response.json()["count"] == 0


@pytest.mark.parametrize(
    "key",
    ["0" * 40, "not-a-token", "x" * 41, "a\x00b", "'OR'1'='1'--"],
    ids=["unknown", "short", "too long", "nul", "quote"],
)
def test_a_key_that_names_no_token_gets_401_invalid_token(staff, key):
    Token.objects.create(user=staff)

    response = with_token(key).get(ORDERS, {"customer_id": "nobody"})

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."
    assert response["WWW-Authenticate"] == "Token"


def test_an_inactive_users_token_gets_401(db):
    user = get_user_model().objects.create_user(username="gone", password="pw-gone", is_active=False)
    token = Token.objects.create(user=user)

    response = with_token(token.key).get(ORDERS)

    assert response.status_code == 401
    assert response.json()["detail"] == "User inactive or deleted."


def test_a_deleted_token_no_longer_signs_in(staff):
    token = Token.objects.create(user=staff)
    assert with_token(token.key).get(ORDERS, {"customer_id": "nobody"}).status_code == 200

    token.delete()

    assert with_token(token.key).get(ORDERS, {"customer_id": "nobody"}).status_code == 401
