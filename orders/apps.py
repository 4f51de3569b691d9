from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders"

    def ready(self) -> None:
        # Each domain signal becomes an outbox row in the sender's transaction. Imports fail loudly.
        from eventing.transport.outbox import outbox_uid, record_event
        from orders import signals

        signals.order_created.connect(record_event, dispatch_uid=outbox_uid("orders.order_created"))
        signals.order_confirmed.connect(record_event, dispatch_uid=outbox_uid("orders.order_confirmed"))
        signals.order_rejected.connect(record_event, dispatch_uid=outbox_uid("orders.order_rejected"))
        signals.order_cancelled.connect(record_event, dispatch_uid=outbox_uid("orders.order_cancelled"))
