"""Domain signals of the inventory app. Each is sent with ``event=<Event>`` and
``aggregate_version=<int>`` inside the transaction that made the change;
``eventing`` records them in the outbox."""

from django.dispatch import Signal

stock_added = Signal()
stock_reserved = Signal()
stock_rejected = Signal()
stock_released = Signal()
