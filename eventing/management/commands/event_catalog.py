"""Write the event catalogue (docs/events.md, docs/events.schema.json), or check it is current."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventing.catalog import catalog_stale, catalog_write
from eventing.contract.versions import CONTRACTS_DIR, ContractError, contracts_update


class Command(BaseCommand):
    help = (
        "Write the event catalogue: events.md (readable) and events.schema.json (JSON Schemas), "
        "derived from the event classes, the upcasters and the consumer registry."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--output-dir",
            type=Path,
            default=settings.BASE_DIR / "docs",
            help="Directory of events.md and events.schema.json (default: the project's docs/).",
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--check",
            action="store_true",
            help="Write nothing; exit non-zero when the files on disk differ from what would be written.",
        )
        mode.add_argument(
            "--update-contracts",
            action="store_true",
            help=f"First write the contract snapshot of each event's current version missing from {CONTRACTS_DIR}; "
            "refused when a snapshot's fields changed without a version bump.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        output_dir: Path = options["output_dir"]
        if options["check"]:
            stale = catalog_stale(output_dir=output_dir)
            if stale:
                names = ", ".join(str(path) for path in stale)
                raise CommandError(f"the event catalogue is stale ({names}): run `manage.py event_catalog`")
            self.stdout.write(f"the event catalogue in {output_dir} is up to date")
            return
        if options["update_contracts"]:
            try:
                written = contracts_update()
            except ContractError as exc:
                raise CommandError(str(exc)) from None
            for path in written:
                self.stdout.write(f"wrote {path}")
        written = catalog_write(output_dir=output_dir)
        for path in written:
            self.stdout.write(f"wrote {path}")
        if not written:
            self.stdout.write(f"the event catalogue in {output_dir} is up to date")
