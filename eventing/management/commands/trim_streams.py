from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventing.transport.client import get_redis, redact_url
from eventing.transport.trim import trim_streams


class Command(BaseCommand):
    help = "Trim stream entries every consumer group has acked (XTRIM MINID); unread events are never dropped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stream", help="Stream to trim (default: settings.EVENTING_STREAM), with its retry streams."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stream = options["stream"] or settings.EVENTING_STREAM
        try:
            removed = trim_streams(get_redis(), stream)
        except redis.RedisError as exc:
            raise CommandError(f"cannot trim {stream} at {redact_url(settings.REDIS_URL)}: {exc}") from None
        for name, count in removed.items():
            self.stdout.write(f"{name}: trimmed {count} entr{'y' if count == 1 else 'ies'}")
