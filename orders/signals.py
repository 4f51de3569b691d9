"""Domain signals of the orders app. Each is sent with ``event=<Event>`` and
``aggregate_version=<int>`` inside the transaction that made the change;
``eventing`` records them in the outbox."""

from django.dispatch import Signal

order_created = Signal()
order_confirmed = Signal()
order_rejected = Signal()
order_cancelled = Signal()
