from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from webhooks import rawstore  # needs the models: only once apps are ready

        # A malformed CONDUIT_RAW_STORAGE stops the start, naming the variable.
        rawstore.write_location()
