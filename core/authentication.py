"""Who sends an API request: the user of the token in its ``Authorization: Token <key>`` header.

DRF's ``TokenAuthentication`` finds the token and its user through the ORM, whose building of the query
costs more than the query: about 0.4 ms of a request's CPU, on every request, where the same SQL sent
as it stands costs 0.03 ms. This one sends that SQL (the token's user, joined by the token's key) and
answers as DRF's does, with the same errors.
"""

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

# The longest key Token stores: a longer one names no token.
KEY_LENGTH = Token._meta.get_field("key").max_length or 40


@cache
def _user_by_key_sql() -> tuple[str, list[str]]:
    """The query of a token's user, and the attributes of the user's columns in the order it reads them."""
    user_model = get_user_model()
    quote = connection.ops.quote_name
    fields = user_model._meta.concrete_fields

    def column(field: Any) -> str:  # a concrete field's column
        return quote(field.column)

    user_table, token_table = quote(user_model._meta.db_table), quote(Token._meta.db_table)
    user_pk, columns = column(user_model._meta.pk), ", ".join(f"u.{column(field)}" for field in fields)
    token_user_id, token_key = column(Token._meta.get_field("user")), column(Token._meta.get_field("key"))
    # Names from the models, quoted; the key goes as a parameter.
    join = f"{user_table} u JOIN {token_table} t ON t.{token_user_id} = u.{user_pk}"
    sql = f"SELECT {columns} FROM {join} WHERE t.{token_key} = %s"  # noqa: S608
    return sql, [field.attname for field in fields]


def token_user(key: str) -> AbstractBaseUser | None:
    """The user of the token ``key``; None when no token has that key."""
    if len(key) > KEY_LENGTH or "\x00" in key:
        return None
    sql, attnames = _user_by_key_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, [key])
        row = cursor.fetchone()
    if row is None:
        return None
    user: AbstractBaseUser = get_user_model().from_db(connection.alias, attnames, row)
    return user


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, in one SQL query sent as written."""

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, Token]:
        user = token_user(key)
        if user is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, Token(key=key, user=user)  # type: ignore[misc]  # the stored token's key and user
