from django.contrib import admin

from inventory.models import Reservation, StockItem


@admin.register(StockItem)
class StockItemAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "on_hand", "reserved", "available", "version", "updated_at"]
    search_fields = ["sku", "name"]
    # Counts change only through services, which emit the matching events.
    readonly_fields = ["on_hand", "reserved", "version", "updated_at"]


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ["order_id", "status", "version", "created_at"]
    list_filter = ["status"]
    search_fields = ["order_id"]
    readonly_fields = ["order_id", "status", "lines", "reason", "version", "created_at", "updated_at"]
