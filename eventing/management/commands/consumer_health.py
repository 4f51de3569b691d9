import json
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventing.redis_client import get_redis


class Command(BaseCommand):
    help = "Show whether each running consumer is ready; exits non-zero when one is not (or none runs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="Only this consumer group.")

    def handle(self, *args: Any, **options: Any) -> None:
        stream = settings.EVENTING_STREAM
        pattern = f"eventing:health:{stream}:{options['name'] or '*'}:*"
        try:
            client = get_redis()
            records = {key: client.get(key) for key in sorted(client.scan_iter(pattern))}
        except redis.RedisError as exc:
            raise CommandError(f"not ready: cannot reach Redis at {settings.REDIS_URL}: {exc}") from None
        records = {key: json.loads(value) for key, value in records.items() if value}
        if not records:
            raise CommandError(
                f"not ready: no consumer {options['name'] or ''} has reported in the last 30s".replace("  ", " ")
            )
        for key, record in records.items():
            group, consumer = key.removeprefix(f"eventing:health:{stream}:").split(":", 1)
            state = "ready" if record["ready"] else f"NOT READY ({record['reason']})"
            self.stdout.write(f"{group} {consumer}: {state}, {record['processed']} processed, reported {record['at']}")
        if not all(record["ready"] for record in records.values()):
            raise CommandError("not ready")
