from django.contrib import admin
from django.urls import include, path
from rest_framework.authtoken.views import obtain_auth_token

from eventing.apis import EventLogApi, TimelineApi

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/token/", obtain_auth_token, name="api-token"),
    path("api/auth/", include("rest_framework.urls")),
    path("api/inventory/", include("inventory.urls")),
    path("api/orders/", include("orders.urls")),
    path("api/events/", EventLogApi.as_view(), name="events"),
    path("api/timeline/<str:correlation_id>/", TimelineApi.as_view(), name="timeline"),
]
