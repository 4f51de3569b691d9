from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EventingConfig(AppConfig):
    name = "eventing"
    verbose_name = "Eventing"

    def ready(self) -> None:
        # Imports only, no I/O: the Mongo connection is registered lazily.
        from eventing import mongo, outbox

        autodiscover_modules("events", "handlers")
        outbox.connect_domain_signals()
        mongo.connect()
