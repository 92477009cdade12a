from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ConduitConfig(AppConfig):
    name = "conduit"


class ConduitAdminConfig(admin_apps.AdminConfig):
    """Django's admin with Conduit's site as ``admin.site``: INSTALLED_APPS names
    this instead of ``django.contrib.admin`` (Django's documented way to replace
    the default site)."""

    # Not the config of the `conduit` app itself (that is ConduitConfig above).
    default = False
    default_site = "conduit.admin.ConduitAdminSite"
