from django.urls import path

from inventory.apis import StockItemDetailApi, StockItemListCreateApi, StockItemRestockApi

app_name = "inventory"

urlpatterns = [
    path("items/", StockItemListCreateApi.as_view(), name="items"),
    path("items/<str:sku>/", StockItemDetailApi.as_view(), name="item"),
    path("items/<str:sku>/restock/", StockItemRestockApi.as_view(), name="restock"),
]
