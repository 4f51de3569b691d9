"""The local development run's demo data: an operator, a customer and sample stock, each made once."""

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.password_validation import validate_password
from django.db.models import Q

from inventory.models import StockItem
from inventory.services import stock_item_create

SAMPLE_STOCK = [
    ("KBD-1", "Mechanical keyboard", 10),
    ("MOUSE-1", "Wireless mouse", 25),
    ("MON-27", "27-inch monitor", 3),
]
OPERATORS = "operators"


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str | None  # only when this run created the account: it is shown once
    is_staff: bool


def operators_group() -> Group:
    """Staff who run the bus: view everything of the apps, retry, correct and discard dead letters, cancel orders.
    Not superusers: nobody gets the right to edit bus state by hand (the admin is read-only for it)."""
    group, _ = Group.objects.get_or_create(name=OPERATORS)
    group.permissions.set(
        Permission.objects.filter(
            Q(content_type__app_label__in=["eventing", "orders", "inventory"], codename__startswith="view_")
            | Q(
                content_type__app_label="eventing",
                codename__in=["retry_deadletter", "discard_deadletter", "edit_deadletter"],
            )
            | Q(content_type__app_label="orders", codename="change_order")  # the admin's cancel action
        )
    )
    return group


def demo_account(*, username: str, password: str | None, is_staff: bool) -> DemoAccount:
    """The account, made if missing with ``password`` or a generated one (never a fixed, published one)."""
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    if user is not None:
        return DemoAccount(username=username, password=None, is_staff=user.is_staff)
    password = password or secrets.token_urlsafe(12)
    user = User(username=username, is_staff=is_staff)
    validate_password(password, user)
    user.set_password(password)
    user.save()
    if is_staff:
        user.groups.add(operators_group())
    return DemoAccount(username=username, password=password, is_staff=is_staff)


def sample_stock() -> list[StockItem]:
    """The sample items not stocked yet, created through the service (so STOCK_ADDED is emitted)."""
    return [
        stock_item_create(sku=sku, name=name, quantity=quantity)
        for sku, name, quantity in SAMPLE_STOCK
        if not StockItem.objects.filter(sku=sku).exists()
    ]
