from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from eventing.readside.projections import projections
from eventing.readside.replay import ReplayError, replay_views


class Command(BaseCommand):
    help = (
        "Rebuild read views from the MongoDB event log into new collections while the old ones keep serving, "
        "then switch over atomically and drop the old ones."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--projection",
            action="append",
            dest="projections",
            metavar="NAME",
            help=f"Views to rebuild (repeatable; default all: {', '.join(sorted(projections()))}).",
        )
        parser.add_argument("--since", help="Re-apply events from this ISO time or stream id onto the live views.")
        parser.add_argument(
            "--until", help="Build the views as of this ISO time or stream id; they are left unswitched for inspection."
        )
        parser.add_argument("--dry-run", action="store_true", help="Fold the log and report, writing nothing.")
        parser.add_argument("--batch-size", type=int, default=2000, help="Events read and rows written per batch.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (for logs).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        # The progress bar writes to the command's own stderr stream (its wrapper is not a file).
        stderr = cast(TextIO, self.stderr._out)
        bar: tqdm[Any] = tqdm(unit="event", unit_scale=True, disable=options["no_progress"], file=stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            result = replay_views(
                names=options["projections"],
                since=options["since"],
                until=options["until"],
                dry_run=options["dry_run"],
                batch_size=options["batch_size"],
                progress=progress,
            )
        except ReplayError as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
        rows = ", ".join(f"{name}: {count}" for name, count in result.rows.items())
        self.stdout.write(
            f"{'would rebuild' if options['dry_run'] else 'rebuilt'} {', '.join(result.projections)} from "
            f"{result.events} event(s) in {result.seconds:.1f}s ({result.events_per_second:.0f} events/s); rows: {rows}"
        )
        if result.switched:
            self.stdout.write(
                f"switched to {', '.join(result.collections.values())} in {result.switch_ms:.1f} ms; "
                f"{result.caught_up} event(s) logged meanwhile applied"
            )
        elif result.collections:
            self.stdout.write(f"left unswitched: {', '.join(result.collections.values())}")
