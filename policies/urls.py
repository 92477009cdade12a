from django.urls import path

from policies import views

urlpatterns = [
    path("smtp-policies", views.SmtpPoliciesView.as_view(), name="smtp-policies"),
    path("smtp-policies/<uuid:id>", views.SmtpPolicyView.as_view(), name="smtp-policy"),
]
