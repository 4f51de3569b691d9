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

        # The log-writing handler and the log's indexes, run by the PROJECTIONS consumer.
        from eventing.readside import event_index, event_log, mongo  # noqa: F401

        # What each app publishes, consumes, projects and can recompute.
        autodiscover_modules("events", "handlers", "read_models", "rebuild")
        for module in settings.EVENTING_EXTRA_HANDLER_MODULES:
            importlib.import_module(module)
        mongo.connect()

        from django.core import checks

        from eventing.transport.retention import check_retention
        from eventing.transport.streams import check_partitions

        # Retention windows that would let a redelivered event be applied twice stop manage.py at start.
        checks.register(check_retention, "eventing")
        # So do stream names that a Redis Cluster would scatter over slots (CROSSSLOT).
        checks.register(check_partitions, "eventing")
