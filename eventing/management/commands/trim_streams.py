from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventing.transport.client import REDIS_ERRORS, get_redis, redact_url
from eventing.transport.streams import partition_streams
from eventing.transport.trim import trim_streams


class Command(BaseCommand):
    help = "Trim stream entries every consumer group has acked (XTRIM MINID); unread events are never dropped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stream",
            action="append",
            help="A stream to trim, with its retry streams (default: every partition of settings.EVENTING_STREAM).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        streams = options["stream"] or partition_streams()
        client = get_redis()
        for stream in streams:
            try:
                removed = trim_streams(client, stream)
            except REDIS_ERRORS as exc:
                raise CommandError(f"cannot trim {stream} at {redact_url(settings.REDIS_URL)}: {exc}") from None
            for name, count in removed.items():
                self.stdout.write(f"{name}: trimmed {count} entr{'y' if count == 1 else 'ies'}")
