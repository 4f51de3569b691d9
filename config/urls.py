from django.contrib import admin
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.auth import TokenApi
from core.converters import SkuConverter
from eventing.apis import CorrelationIdConverter, EventLogApi, TimelineApi
from eventing.monitoring import views as monitoring

# Path parameters are bounded: a long or odd one is a 404 before any view or lookup runs.
register_converter(SkuConverter, "sku")
register_converter(CorrelationIdConverter, "correlation_id")

# An unmatched URL under /api/ answers JSON like the views do.
handler404 = "core.exceptions.not_found"

urlpatterns = [
    path("healthz", monitoring.healthz, name="healthz"),
    path("readyz", monitoring.readyz, name="readyz"),
    path("metrics", monitoring.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/auth/token/", TokenApi.as_view(), name="api-token"),
    path("api/auth/", include("rest_framework.urls")),
    path("api/inventory/", include("inventory.urls")),
    path("api/orders/", include("orders.urls")),
    path("api/events/", EventLogApi.as_view(), name="events"),
    path("api/timeline/<correlation_id:correlation_id>/", TimelineApi.as_view(), name="timeline"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
