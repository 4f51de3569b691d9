import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.heap import freeze_startup_heap
from eventing.transport.relay import RelayError, relay_forever


class Command(BaseCommand):
    help = "Publish outbox rows that their committing process did not publish, until SIGTERM or SIGINT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Publish what is pending now, then exit.")
        parser.add_argument(
            "--grace-seconds",
            type=float,
            help="Leave rows younger than this to their own process (default: settings.EVENTING_RELAY_GRACE_SECONDS).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["grace_seconds"] is not None and options["grace_seconds"] < 0:
            raise CommandError("--grace-seconds must not be negative")
        freeze_startup_heap()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            total = relay_forever(stop=stop, once=options["once"], grace_seconds=options["grace_seconds"])
        except RelayError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"published {total} event(s)")
