from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EventingConfig(AppConfig):
    name = "eventing"
    verbose_name = "Eventing"

    def ready(self) -> None:
        # Imports only, no I/O: the Mongo connection is registered lazily.
        import importlib

        from django.conf import settings

        from eventing import mongo, outbox

        autodiscover_modules("events", "handlers", "rebuild")
        for module in settings.EVENTING_EXTRA_HANDLER_MODULES:
            importlib.import_module(module)
        outbox.connect_domain_signals()
        mongo.connect()
