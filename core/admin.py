"""Admin plumbing shared by the apps."""

from typing import Any

from django.http import HttpRequest


class ReadOnlyAdminMixin:
    """The admin reads; services write. Records whose changes must reach the bus (stock, orders, the
    outbox, …) are changed only by services, which emit the matching events: an edit here would let the
    database and the views drift apart. State-changing admin actions call those services."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
