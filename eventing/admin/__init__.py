"""The admin of the bus: the outbox and inbox for inspection (``records``), the dead-letter console
(``dead_letters``) and the MongoDB event log (``event_log``). Importing the package registers them all."""

from eventing.admin import dead_letters, event_log, records

__all__ = ["dead_letters", "event_log", "records"]
