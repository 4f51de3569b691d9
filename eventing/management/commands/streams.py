import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from eventing.monitoring.status import BusStatus, breaches, bus_status, drain_breaches
from eventing.transport.client import REDIS_ERRORS, redact_url


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


class Command(BaseCommand):
    help = (
        "Each partition stream's consumer groups: lag, pending entries, age of the oldest pending one, consumers (idle "
        "time) and dead letters; the outbox backlog and the dead-letter queue. Exits non-zero when a threshold "
        "you set is crossed (for cron and CI)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stream", action="append", help="A stream to show (default: every partition of settings.EVENTING_STREAM)."
        )
        parser.add_argument("--json", action="store_true", help="One JSON document, for scripts.")
        parser.add_argument("--max-lag", type=int, help="Fail when a group has more entries than this undelivered.")
        parser.add_argument(
            "--max-pending-age", type=float, help="Fail when a group's oldest unacked entry is older (seconds)."
        )
        parser.add_argument(
            "--max-dead-letters", type=int, help="Fail when a group has more dead letters pending a decision."
        )
        parser.add_argument(
            "--min-alive", type=int, help="Fail when a declared consumer has fewer live processes than this."
        )
        parser.add_argument(
            "--drained",
            action="store_true",
            help="Fail unless the bus is drained: every outbox row published, and every entry of every partition "
            "(and retry stream) read and acked by every group. The check before repartitioning (docs/scaling.md).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for option in ("max_lag", "max_pending_age", "max_dead_letters", "min_alive"):
            if options[option] is not None and options[option] < 0:
                raise CommandError(f"--{option.replace('_', '-')} must not be negative")
        try:
            status = bus_status(streams=options["stream"])
        except REDIS_ERRORS as exc:
            raise CommandError(f"cannot reach Redis at {redact_url(settings.REDIS_URL)}: {exc}") from None
        except DatabaseError as exc:
            raise CommandError(f"cannot read the database: {exc}") from None
        found = breaches(
            status,
            max_lag=options["max_lag"],
            max_pending_age=options["max_pending_age"],
            max_dead_letters=options["max_dead_letters"],
            min_alive=options["min_alive"],
        )
        if options["drained"]:
            found += drain_breaches(status)
        if options["json"]:
            self.stdout.write(json.dumps({**status.to_dict(), "breaches": found}, indent=2))
        else:
            self._table(status)
        if found:
            raise CommandError("thresholds crossed:\n  " + "\n  ".join(found))

    def _table(self, status: BusStatus) -> None:
        for stream in status.streams:
            self.stdout.write(f"{stream.name}: {stream.length} entries")
            header = f"  {'GROUP':<14}{'LAG':>8}{'PENDING':>9}{'OLDEST':>10}{'ALIVE':>7}{'DLQ':>6}  CONSUMERS"
            self.stdout.write(header)
            for group in stream.groups:
                consumers = ", ".join(
                    f"{c.name} (idle {c.idle_seconds:.1f}s, {c.pending} pending{'' if c.alive else ', no heartbeat'})"
                    for c in group.consumers
                )
                note = "" if group.exists else " (no group yet)" if group.declared else ""
                self.stdout.write(
                    f"  {group.name:<14}{'?' if group.lag is None else group.lag:>8}{group.pending:>9}"
                    f"{_seconds(group.oldest_pending_age_seconds):>10}{group.alive:>7}{group.dead_letters:>6}  "
                    f"{consumers or '-'}{note}"
                )
        outbox = status.outbox
        self.stdout.write(
            f"outbox: {outbox.backlog} unpublished"
            + (f", oldest {_seconds(outbox.oldest_age_seconds)}" if outbox.backlog else "")
        )
        letters = ", ".join(f"{status_} {reason} {n}" for (status_, reason), n in sorted(status.dead_letters.items()))
        self.stdout.write(f"dead letters: {letters or 'none'}")
