from django.urls import path

from inventory.apis import StockItemDetailApi, StockItemListCreateApi, StockItemRestockApi

app_name = "inventory"

urlpatterns = [
    path("items/", StockItemListCreateApi.as_view(), name="items"),
    path("items/<sku:sku>/", StockItemDetailApi.as_view(), name="item"),
    path("items/<sku:sku>/restock/", StockItemRestockApi.as_view(), name="restock"),
]
