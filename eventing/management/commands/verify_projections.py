from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventing.readside.replay import ReplayError, verify_views


class Command(BaseCommand):
    help = "Fold the event log and compare it with the live views and the database; exits non-zero on drift."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--projection", action="append", dest="projections", metavar="NAME", help="Views to check.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            differences = verify_views(names=options["projections"])
        except ReplayError as exc:
            raise CommandError(str(exc)) from None
        for line in differences:
            self.stdout.write(line)
        if differences:
            raise CommandError(f"{len(differences)} difference(s) between the event log, the views and the database")
        self.stdout.write("no drift: the views match the event log and the database")
