from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from accounts.admin import TwoFactorAdminSite

# Staff with 2FA on must give a code at the admin login (django-otp's pattern for
# OTPAdminSite); swapping the class keeps every app's admin registrations.
admin.site.__class__ = TwoFactorAdminSite

api_v1 = [
    path("", include("accounts.urls")),
    path("", include("domains.urls")),
    path("", include("policies.urls")),
    path("", include("webhooks.urls")),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs", SpectacularSwaggerView.as_view(url_name="openapi"), name="api-docs"),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api-auth/", include("rest_framework.urls")),
    path("admin/", admin.site.urls),
]
