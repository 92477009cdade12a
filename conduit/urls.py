from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

# admin.site is conduit.admin.ConduitAdminSite (AdminConfig.default_site in conduit.apps).
api_v1 = [
    path("", include("accounts.urls")),
    path("", include("domains.urls")),
    path("", include("policies.urls")),
    path("", include("webhooks.urls")),
    path("", include("notifications.urls")),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="api-docs"),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api-auth/", include("rest_framework.urls")),
    path("admin/", admin.site.urls),
]
