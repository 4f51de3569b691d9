from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventing.consumer.health import HEALTH_TTL_SECONDS
from eventing.monitoring.status import read_heartbeats
from eventing.transport.client import REDIS_ERRORS, get_redis, redact_url


class Command(BaseCommand):
    help = "Show whether each running consumer is ready; exits non-zero when one is not (or none runs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="Only this consumer group.")

    def handle(self, *args: Any, **options: Any) -> None:
        stream = settings.EVENTING_STREAM
        try:
            records = read_heartbeats(get_redis(), stream, group=options["name"])
        except REDIS_ERRORS as exc:
            raise CommandError(f"not ready: cannot reach Redis at {redact_url(settings.REDIS_URL)}: {exc}") from None
        if not records:
            who = f"consumer {options['name']}" if options["name"] else "consumer"
            raise CommandError(f"not ready: no {who} has reported in the last {HEALTH_TTL_SECONDS}s")
        for (group, consumer), record in records.items():
            state = "ready" if record.ready else f"NOT READY ({record.reason})"
            self.stdout.write(f"{group} {consumer}: {state}, {record.processed} processed, reported {record.at}")
        if not all(record.ready for record in records.values()):
            raise CommandError("not ready")
