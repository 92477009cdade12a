from django.apps import AppConfig


class IngressConfig(AppConfig):
    name = "ingress"
    default_auto_field = "django.db.models.BigAutoField"
