import uuid

from django.conf import settings
from django.db import models


class Customer(models.Model):
    """The customer account a user orders as. Orders and their events carry ``customer_id``, not the
    user: the id stays when a username changes, and staff can place orders for a customer by it."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="customer")
    customer_id = models.CharField(max_length=64, unique=True)

    def __str__(self) -> str:
        return self.customer_id


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING"
        CONFIRMED = "CONFIRMED"
        REJECTED = "REJECTED"
        CANCELLED = "CANCELLED"

    CANCELLABLE = (Status.PENDING, Status.CONFIRMED)
    FINAL = (Status.REJECTED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer_id = models.CharField(max_length=64, db_index=True)
    # The order's place among its customer's orders, from 1 (CustomerOrderSequence); 0 for an order placed
    # before orders were numbered. The customer's listing keeps their orders in chunks by it.
    customer_seq = models.PositiveIntegerField("customer's order number", default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.TextField(blank=True)
    # Bumped with every change; events carry it so views apply them in order.
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer_id", "customer_seq"],
                condition=models.Q(customer_seq__gt=0),
                name="one_order_per_customer_seq",
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class CustomerOrderSequence(models.Model):
    """How many orders each customer has placed: the last ``Order.customer_seq`` given out. Its row is
    bumped in the transaction that places the order, so a rolled-back order leaves no gap, and a customer's
    concurrent orders take their numbers one after the other."""

    customer_id = models.CharField(max_length=64, primary_key=True)
    last = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.last}"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["order", "sku"], name="one_line_per_sku")]

    def __str__(self) -> str:
        return f"{self.sku} x{self.quantity}"


class CatalogItem(models.Model):
    """The skus orders may name, learned from the inventory's STOCK_ADDED events."""

    sku = models.CharField(max_length=64, primary_key=True)
    name = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.sku
