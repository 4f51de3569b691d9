from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inventory.demo import demo_account, operators_group, sample_stock


class Command(BaseCommand):
    help = (
        "Local development only (DJANGO_DEBUG=true): a demo operator (staff, not superuser), a demo customer "
        "and sample stock, each only if missing. A generated password is printed once, when the account is made."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo", help="The operator (staff) account (default: demo).")
        parser.add_argument("--customer", default="alice", help="The customer account (default: alice).")
        parser.add_argument(
            "--password", default=None, help="The operator's password (default: $DEMO_PASSWORD, else generated)."
        )
        parser.add_argument(
            "--customer-password",
            default=None,
            help="The customer's password (default: $DEMO_CUSTOMER_PASSWORD, else generated).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("seed_demo is for a local development run: set DJANGO_DEBUG=true (make run does)")
        operators_group()
        accounts = [
            (options["username"], options["password"] or settings.DEMO_PASSWORD, True),
            (options["customer"], options["customer_password"] or settings.DEMO_CUSTOMER_PASSWORD, False),
        ]
        for username, password, is_staff in accounts:
            role = "operator (staff)" if is_staff else "customer"
            try:
                account = demo_account(username=username, password=password or None, is_staff=is_staff)
            except ValidationError as exc:
                raise CommandError(f"the password for {username}: {' '.join(exc.messages)}") from None
            if account.password is None:
                self.stdout.write(f"demo {role}: {username} already exists (password unchanged)")
            else:
                self.stdout.write(f"demo {role}: {username} / {account.password}  (shown only now)")
        for item in sample_stock():
            self.stdout.write(f"sample stock: {item.sku} ({item.name}) x{item.on_hand}")
