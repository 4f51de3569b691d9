from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"
    verbose_name = "Inventory"

    def ready(self) -> None:
        # Each domain signal becomes an outbox row in the sender's transaction. Imports fail loudly.
        from eventing.transport.outbox import outbox_uid, record_event
        from inventory import signals

        signals.stock_added.connect(record_event, dispatch_uid=outbox_uid("inventory.stock_added"))
        signals.stock_reserved.connect(record_event, dispatch_uid=outbox_uid("inventory.stock_reserved"))
        signals.stock_rejected.connect(record_event, dispatch_uid=outbox_uid("inventory.stock_rejected"))
        signals.stock_released.connect(record_event, dispatch_uid=outbox_uid("inventory.stock_released"))
