from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventing.readside.state_checks import state_checks


class Command(BaseCommand):
    help = "Recompute an app's relational state from the event log alone and compare it with the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("app", help=f"Whose state: {', '.join(sorted(state_checks())) or 'none registered'}.")
        parser.add_argument(
            "--check", action="store_true", help="Compare with the database; exit non-zero on any difference."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        checks = state_checks()
        if options["app"] not in checks:
            raise CommandError(f"no state rebuild for {options['app']!r}; known: {', '.join(sorted(checks))}")
        if not options["check"]:
            raise CommandError("only --check is supported: the database stays the system of record")
        differences = checks[options["app"]]()
        for line in differences:
            self.stdout.write(line)
        if differences:
            raise CommandError(f"{len(differences)} difference(s) between the events and the database")
        self.stdout.write(f"{options['app']}: the state recomputed from events matches the database")
