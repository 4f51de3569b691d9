from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from eventing.transport.retention import count_expired, prune_tables


class Command(BaseCommand):
    help = (
        "Delete published outbox rows older than EVENTING_OUTBOX_RETENTION_SECONDS and inbox rows older than "
        "EVENTING_INBOX_RETENTION_SECONDS, in bounded batches (the relay also does it every "
        "EVENTING_PRUNE_INTERVAL_SECONDS). Unpublished outbox rows are never deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = count_expired() if options["dry_run"] else prune_tables()
        except DatabaseError as exc:
            raise CommandError(f"cannot prune the outbox and inbox: {exc}") from None
        verb = "would delete" if options["dry_run"] else "deleted"
        outbox_window, inbox_window = (
            settings.EVENTING_OUTBOX_RETENTION_SECONDS,
            settings.EVENTING_INBOX_RETENTION_SECONDS,
        )
        self.stdout.write(f"outbox: {verb} {report.outbox} published row(s) older than {outbox_window}s")
        kept = report.kept_for_dead_letters
        held = f", kept {kept} of events with a pending dead letter" if kept else ""
        self.stdout.write(f"inbox: {verb} {report.inbox} row(s) older than {inbox_window}s{held}")
