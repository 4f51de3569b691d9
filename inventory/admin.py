from django.contrib import admin

from core.admin import ReadOnlyAdminMixin
from inventory.models import Reservation, StockItem


# Stock changes only through the services (and the API's restock), which emit the matching events.
@admin.register(StockItem)
class StockItemAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[StockItem]):
    list_display = ["sku", "name", "on_hand", "reserved", "available", "version", "updated_at"]
    search_fields = ["sku", "name"]


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[Reservation]):
    list_display = ["order_id", "status", "version", "created_at"]
    list_filter = ["status"]
    search_fields = ["order_id"]
