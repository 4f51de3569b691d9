"""The dead-letter console on the command line: the admin's filters, retry and discard."""

import argparse
import getpass
import json
import sys
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from core.exceptions import InvalidInput
from eventing.models import DeadLetter
from eventing.selectors import dead_letter_actions, dead_letter_filter, dead_letter_find, dead_letter_payload_pretty
from eventing.services import (
    ActionResult,
    dead_letter_discard,
    dead_letter_edit,
    dead_letter_envelope_text,
    dead_letter_retry,
)

FILTERS = ("group", "type", "status", "reason", "since", "search")
LIST_COLUMNS = ("id", "group", "type", "reason", "status", "attempts", "last failure", "event id")


def since_value(value: str) -> datetime:
    """An ISO date (midnight, in the current time zone) or datetime (the current time zone if it names none)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO date or datetime (e.g. 2024-05-01 or 2024-05-01T13:30:00+00:00)"
        ) from None
    return timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed


def status_value(value: str) -> str:
    status = value.upper()
    if status not in DeadLetter.Status.values:
        raise argparse.ArgumentTypeError(f"{value!r} is not a status; use one of {', '.join(DeadLetter.Status.values)}")
    return status


def reason_value(value: str) -> str:
    if value not in DeadLetter.Reason.values:
        choices = ", ".join(repr(reason) for reason in DeadLetter.Reason.values)
        raise argparse.ArgumentTypeError(f"{value!r} is not a reason; use one of {choices}")
    return value


def add_filters(parser: CommandParser, *, reason_flags: tuple[str, ...] = ("--reason", "--failure-reason")) -> None:
    parser.add_argument("--group", help="Only this consumer group.")
    parser.add_argument("--type", help="Only this event type, e.g. STOCK_ADDED.")
    parser.add_argument("--status", type=status_value, help=f"Only this status: {', '.join(DeadLetter.Status.values)}.")
    parser.add_argument(
        *reason_flags,
        dest="reason",
        type=reason_value,
        help=f"Only those dead-lettered for this reason: {', '.join(map(repr, DeadLetter.Reason.values))}.",
    )
    parser.add_argument("--since", type=since_value, help="Only those dead-lettered since this ISO date or datetime.")
    parser.add_argument("--search", help="Only the entry with this exact event id, correlation id or stream entry id.")


def add_targets(parser: CommandParser, **filter_options: Any) -> None:
    parser.add_argument("ids", nargs="*", type=int, metavar="ID", help="Dead letters to act on.")
    parser.add_argument(
        "--all", action="store_true", help="Act on every dead letter the filters match (default --status PENDING)."
    )
    add_filters(parser, **filter_options)


class Command(BaseCommand):
    help = (
        "List, show, retry, discard or correct and retry dead letters (the admin's dead-letter console on the "
        "command line)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,show,retry,discard,edit}")

        listing = actions.add_parser("list", help="List dead letters, newest first.")
        add_filters(listing)
        listing.add_argument("--limit", type=int, default=50, help="At most this many (default 50).")
        listing.add_argument("--json", action="store_true", help="One JSON object per line instead of a table.")

        show = actions.add_parser("show", help="Every field of one dead letter, its payload and its audit trail.")
        show.add_argument("id", type=int, metavar="ID", help="The dead letter's id.")

        retry = actions.add_parser("retry", help="Deliver dead letters again, each to its own consumer group only.")
        add_targets(retry)

        discard = actions.add_parser("discard", help="Give up on dead letters for good, with a reason.")
        # Here --reason is why they are discarded, so the failure-reason filter is spelt out.
        add_targets(discard, reason_flags=("--failure-reason",))
        discard.add_argument(
            "--reason", dest="why", help="Why they are given up on (required; kept in the audit trail)."
        )

        edit = actions.add_parser(
            "edit",
            help="Correct a dead letter's event and deliver it again to its group (needs the edited envelope as a "
            "file; --dump writes the current one to start from).",
        )
        edit.add_argument("id", type=int, metavar="ID", help="The dead letter's id.")
        edit.add_argument("--dump", action="store_true", help="Print the failed event's envelope (JSON) and stop.")
        edit.add_argument("--file", help="The corrected envelope, as JSON ('-' for standard input).")
        edit.add_argument("--reason", help="Why the event needed correcting (required; kept in the audit trail).")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"handle_{options['action']}")(options)

    def handle_edit(self, options: dict[str, Any]) -> None:
        [dead_letter], _ = self.find([options["id"]])
        if options["dump"]:
            self.stdout.write(dead_letter_envelope_text(dead_letter=dead_letter))
            return
        if not options["file"]:
            raise CommandError(
                "name the corrected envelope: --file edited.json (or --dump to start from the current one)"
            )
        reason = (options["reason"] or "").strip()
        if not reason:
            raise CommandError('a reason is required: --reason "why the event needed correcting"')
        try:
            if options["file"] == "-":
                envelope = sys.stdin.read()
            else:
                with open(options["file"], encoding="utf-8") as file:
                    envelope = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {options['file']}: {exc}") from None
        try:
            result = dead_letter_edit(dead_letter=dead_letter, envelope=envelope, actor=actor(), reason=reason)
        except InvalidInput as exc:
            problems = [str(error) for errors in exc.field_errors.values() for error in errors]
            raise CommandError("not edited: " + "; ".join(problems)) from None
        self.stdout.write(f"#{dead_letter.pk} {dead_letter}: {result.message}")

    def handle_list(self, options: dict[str, Any]) -> None:
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        dead_letters = list(self.filtered(options)[: options["limit"]])
        if options["json"]:
            for dead_letter in dead_letters:
                self.stdout.write(json.dumps(summary(dead_letter), sort_keys=True))
            return
        if not dead_letters:
            self.stdout.write("No dead letters match.")
            return
        rows = [LIST_COLUMNS, *(row(dead_letter) for dead_letter in dead_letters)]
        widths = [max(len(line[column]) for line in rows) for column in range(len(LIST_COLUMNS))]
        for line in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())

    def handle_show(self, options: dict[str, Any]) -> None:
        [dead_letter], _ = self.find([options["id"]])
        for field in DeadLetter._meta.concrete_fields:
            if field.name not in ("payload", "traceback"):
                value = getattr(dead_letter, field.attname)
                self.stdout.write(f"{field.name}: {value.isoformat() if isinstance(value, datetime) else value}")
        self.stdout.write("traceback:")
        self.stdout.write(dead_letter.traceback or "-")
        self.stdout.write("payload:")
        self.stdout.write(dead_letter_payload_pretty(dead_letter))
        actions = list(dead_letter_actions(dead_letter=dead_letter))
        self.stdout.write(f"audit trail: {len(actions) or 'none'}")
        for action in actions:
            because = f" (reason: {action.reason})" if action.reason else ""
            self.stdout.write(f"  {action.at.isoformat()} {action.kind} by {action.actor}{because}: {action.result}")
            if action.diff:
                self.stdout.write("    " + action.diff.rstrip("\n").replace("\n", "\n    "))

    def handle_retry(self, options: dict[str, Any]) -> None:
        dead_letters = self.targets(options)
        if dead_letters is not None:
            self.report(dead_letter_retry(dead_letters=dead_letters, actor=actor()), done="retried")

    def handle_discard(self, options: dict[str, Any]) -> None:
        why = (options["why"] or "").strip()
        if not why:
            raise CommandError('a reason is required to discard dead letters: --reason "why they are given up on"')
        dead_letters = self.targets(options)
        if dead_letters is None:
            return
        try:
            results = dead_letter_discard(dead_letters=dead_letters, actor=actor(), reason=why)
        except InvalidInput as exc:
            raise CommandError("; ".join(map(str, exc.field_errors.get("reason", [exc.message])))) from None
        self.report(results, done="discarded")

    def filtered(self, options: dict[str, Any]) -> Any:
        return dead_letter_filter(
            group=options["group"],
            event_type=options["type"],
            status=options["status"],
            reason=options["reason"],
            since=options["since"],
            search=options["search"],
        )

    def find(self, ids: list[int]) -> tuple[list[DeadLetter], list[int]]:
        found, missing = dead_letter_find(ids=ids)
        if missing:
            raise CommandError(f"no dead letter with id {', '.join(map(str, missing))}; nothing was changed")
        return found, missing

    def targets(self, options: dict[str, Any]) -> list[DeadLetter] | None:
        """The named dead letters, or with --all those the filters match (None, reported, when none do)."""
        filtering = [flag(name, options["action"]) for name in FILTERS if options[name] is not None]
        if options["all"]:
            if options["ids"]:
                raise CommandError("name dead letter ids or use --all, not both")
            dead_letters = list(self.filtered({**options, "status": options["status"] or DeadLetter.Status.PENDING}))
            if not dead_letters:
                self.stdout.write("No dead letters match.")
                return None
            return dead_letters
        if not options["ids"]:
            raise CommandError("name the dead letter ids to act on, or use --all with filters")
        if filtering:
            raise CommandError(f"filters apply only with --all: {', '.join(filtering)}")
        return self.find(options["ids"])[0]

    def report(self, results: list[ActionResult], *, done: str) -> None:
        for result in results:
            outcome = done if result.done else "skipped"
            self.stdout.write(f"#{result.dead_letter.pk} {result.dead_letter}: {outcome}: {result.message}")
        skipped = sum(1 for result in results if not result.done)
        self.stdout.write(f"{len(results) - skipped} {done}, {skipped} skipped.")


def flag(name: str, action: str) -> str:
    return "--failure-reason" if (name, action) == ("reason", "discard") else f"--{name}"


def actor() -> str:
    return f"cli:{getpass.getuser()}"


def row(dead_letter: DeadLetter) -> tuple[str, ...]:
    return (
        str(dead_letter.pk),
        dead_letter.consumer_group,
        dead_letter.event_type or "-",
        dead_letter.reason,
        dead_letter.status,
        str(dead_letter.attempts),
        dead_letter.last_failed_at.isoformat(timespec="seconds"),
        dead_letter.event_id or "-",
    )


def summary(dead_letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": dead_letter.pk,
        "consumer_group": dead_letter.consumer_group,
        "event_type": dead_letter.event_type,
        "reason": dead_letter.reason,
        "status": dead_letter.status,
        "attempts": dead_letter.attempts,
        "first_failed_at": dead_letter.first_failed_at.isoformat(),
        "last_failed_at": dead_letter.last_failed_at.isoformat(),
        "event_id": dead_letter.event_id,
        "correlation_id": dead_letter.correlation_id,
        "stream": dead_letter.stream,
        "entry_id": dead_letter.entry_id,
        "error_class": dead_letter.error_class,
        "error_message": dead_letter.error_message,
        "created_at": dead_letter.created_at.isoformat(),
    }
