import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.heap import freeze_startup_heap
from eventing.consumer.runner import ConsumerError, StreamConsumer
from eventing.contract import consumers as registry
from eventing.readside.event_log import logged_before
from eventing.transport.client import CREDENTIAL_ERRORS, credentials_refused


class Command(BaseCommand):
    help = "Run one event consumer (its own consumer group) until SIGTERM or SIGINT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="Consumer to run; see --list.")
        parser.add_argument("--list", action="store_true", help="List the consumers and the events each handles.")
        parser.add_argument(
            "--stream", help="The bus's stream, whose partitions it reads (default: settings.EVENTING_STREAM)."
        )
        parser.add_argument("--count", type=int, help="Entries per read (default: settings.EVENTING_READ_COUNT).")
        parser.add_argument(
            "--block-ms", type=int, help="How long one read blocks (default: settings.EVENTING_BLOCK_MS)."
        )
        parser.add_argument("--consumer-id", help="Name within the group (default: host-pid).")
        parser.add_argument(
            "--from-beginning",
            action="store_true",
            help="For a consumer that has never run: first apply the whole history, "
            "including events already trimmed from the stream (read from the event log).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            for name in registry.consumer_names():
                types = sorted({h.event_type for h in registry.consumer_handlers(name)})
                self.stdout.write(f"{name}: {', '.join(types)} ({registry.consumer(name).description})")
            return
        if not options["name"]:
            raise CommandError(f"name a consumer: {', '.join(registry.consumer_names())} (or --list)")
        for option in ("count", "block_ms"):
            if options[option] is not None and options[option] < (1 if option == "count" else 0):
                raise CommandError(f"--{option.replace('_', '-')} must be positive")
        try:
            consumer = StreamConsumer(
                name=options["name"],
                stream=options["stream"],
                count=options["count"],
                block_ms=options["block_ms"],
                consumer_id=options["consumer_id"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        freeze_startup_heap()
        stop = threading.Event()

        def request_stop(signum: int, _frame: object) -> None:
            self.stderr.write(f"{signal.Signals(signum).name}: finishing the current batch, then stopping")
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            if options["from_beginning"]:
                consumer.catch_up_from_log(stop, history=logged_before)
            consumer.run(stop=stop)
        except ConsumerError as exc:
            raise CommandError(str(exc)) from None
        except CREDENTIAL_ERRORS as exc:
            raise CommandError(credentials_refused(exc)) from None
