"""The admin of the bus: the outbox and inbox for inspection (``records``), the dead-letter console
(``dead_letters``), the MongoDB event log (``event_log``) and the bus status page (``bus_status``).
Importing the package registers them all."""

from eventing.admin import bus_status, dead_letters, event_log, records

__all__ = ["bus_status", "dead_letters", "event_log", "records"]
