from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyAdminMixin
from core.exceptions import DomainError
from orders.models import CatalogItem, Customer, Order, OrderLine
from orders.services import order_cancel


class OrderLineInline(ReadOnlyAdminMixin, admin.TabularInline[OrderLine, Order]):
    model = OrderLine
    extra = 0


@admin.register(Order)
class OrderAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[Order]):
    list_display = ["id", "customer_id", "customer_seq", "status", "version", "created_at", "updated_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["id", "customer_id"]
    inlines = [OrderLineInline]
    actions = ["cancel_orders"]

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("orders.change_order")

    @admin.action(description="Cancel selected orders (emits ORDER_CANCELLED)", permissions=["cancel"])
    def cancel_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        cancelled = 0
        for order_id in queryset.values_list("pk", flat=True):
            try:
                order_cancel(order_id=str(order_id))
            except DomainError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                cancelled += 1
        if cancelled:
            self.message_user(request, f"Cancelled {cancelled} order(s).", messages.SUCCESS)


@admin.register(CatalogItem)
class CatalogItemAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[CatalogItem]):
    list_display = ["sku", "name"]
    search_fields = ["sku", "name"]


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin[Customer]):
    """Which user orders as which customer: an account record, not bus state, so staff may fix it here."""

    list_display = ["customer_id", "user"]
    search_fields = ["customer_id", "user__username"]
    raw_id_fields = ["user"]
