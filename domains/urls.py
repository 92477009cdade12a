from django.urls import path

from domains import views

urlpatterns = [
    path("domains", views.DomainsView.as_view(), name="domains"),
    path("domains/<uuid:id>", views.DomainView.as_view(), name="domain"),
    path("domains/<uuid:id>/verify", views.DomainVerifyView.as_view(), name="domain-verify"),
]
