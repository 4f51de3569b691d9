from django.db import models
from django.db.models import F, Q


class StockItem(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    on_hand = models.PositiveIntegerField(default=0)
    reserved = models.PositiveIntegerField(default=0)
    # Bumped with every change; events carry it so the stock view applies them in order.
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # The last line of defence: available = on_hand - reserved never goes negative.
            models.CheckConstraint(condition=Q(reserved__lte=F("on_hand")), name="reserved_within_on_hand"),
        ]

    def __str__(self) -> str:
        return self.sku

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class Reservation(models.Model):
    """What the inventory holds for one order. One per order, so reacting to an
    order's events twice, or in the wrong order, cannot reserve twice."""

    class Status(models.TextChoices):
        RESERVED = "RESERVED"
        REJECTED = "REJECTED"
        RELEASED = "RELEASED"
        # The order was cancelled before its reservation was attempted.
        CANCELLED = "CANCELLED"

    order_id = models.UUIDField(unique=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    lines = models.JSONField(default=list)
    reason = models.TextField(blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.order_id} ({self.status})"
