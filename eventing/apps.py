from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class EventingConfig(AppConfig):
    name = "eventing"
    verbose_name = "Eventing"

    def ready(self) -> None:
        # Imports only, no I/O: the Mongo connection is registered lazily. Each app connects
        # its own signals to the outbox in its AppConfig.ready().
        import importlib

        from django.conf import settings

        from eventing.readside import event_log, mongo  # noqa: F401 - event_log registers the log-writing handler

        # What each app publishes, consumes, projects and can recompute.
        autodiscover_modules("events", "handlers", "read_models", "rebuild")
        for module in settings.EVENTING_EXTRA_HANDLER_MODULES:
            importlib.import_module(module)
        mongo.connect()
