from typing import Any, cast

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventing.consumer.health import HEALTH_TTL_SECONDS, HealthRecord, health_pattern, parse_health_key
from eventing.transport.client import REDIS_ERRORS, get_redis, redact_url


class Command(BaseCommand):
    help = "Show whether each running consumer is ready; exits non-zero when one is not (or none runs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="Only this consumer group.")

    def handle(self, *args: Any, **options: Any) -> None:
        stream = settings.EVENTING_STREAM
        pattern = health_pattern(stream=stream, group=options["name"])
        try:
            client = get_redis()
            raw = {str(key): cast(str | None, client.get(key)) for key in sorted(client.scan_iter(pattern))}
        except REDIS_ERRORS as exc:
            raise CommandError(f"not ready: cannot reach Redis at {redact_url(settings.REDIS_URL)}: {exc}") from None
        records = {key: HealthRecord.from_json(value) for key, value in raw.items() if value}
        if not records:
            who = f"consumer {options['name']}" if options["name"] else "consumer"
            raise CommandError(f"not ready: no {who} has reported in the last {HEALTH_TTL_SECONDS}s")
        for key, record in records.items():
            group, consumer = parse_health_key(key, stream=stream)
            state = "ready" if record.ready else f"NOT READY ({record.reason})"
            self.stdout.write(f"{group} {consumer}: {state}, {record.processed} processed, reported {record.at}")
        if not all(record.ready for record in records.values()):
            raise CommandError("not ready")
