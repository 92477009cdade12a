from django.apps import AppConfig


class DomainsConfig(AppConfig):
    name = "domains"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from domains.services import dns_servers

        # A bad CONDUIT_DNS_SERVERS stops the process now (ImproperlyConfigured),
        # not at a user's first verification.
        dns_servers()
