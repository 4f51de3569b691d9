from django.urls import path

from orders.apis import OrderCancelApi, OrderDetailApi, OrderListCreateApi

app_name = "orders"

urlpatterns = [
    path("", OrderListCreateApi.as_view(), name="list"),
    path("<uuid:order_id>/", OrderDetailApi.as_view(), name="detail"),
    path("<uuid:order_id>/cancel/", OrderCancelApi.as_view(), name="cancel"),
]
