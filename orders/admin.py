from django.contrib import admin

from orders.models import CatalogItem, Order, OrderLine


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    readonly_fields = ["sku", "quantity"]
    can_delete = False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "customer_id", "status", "version", "created_at", "updated_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["id", "customer_id"]
    readonly_fields = ["id", "customer_id", "status", "reason", "version", "created_at", "updated_at"]
    inlines = [OrderLineInline]

    def has_add_permission(self, request: object) -> bool:
        return False  # orders are placed through the API so their events are emitted


@admin.register(CatalogItem)
class CatalogItemAdmin(admin.ModelAdmin):
    list_display = ["sku", "name"]
    search_fields = ["sku", "name"]
