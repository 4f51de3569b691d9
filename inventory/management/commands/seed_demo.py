from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from inventory.models import StockItem
from inventory.services import stock_item_create

SAMPLE_STOCK = [
    ("KBD-1", "Mechanical keyboard", 10),
    ("MOUSE-1", "Wireless mouse", 25),
    ("MON-27", "27-inch monitor", 3),
]


class Command(BaseCommand):
    help = "Create a demo staff user and sample stock (each only if missing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo", help="Staff user to create (default: demo).")
        parser.add_argument("--password", default="demo-password", help="Its password (default: demo-password).")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=options["username"], defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(options["password"])
            user.save()
            self.stdout.write(f"demo staff user: {options['username']} / {options['password']}")
        else:
            self.stdout.write(f"demo staff user {options['username']} already exists (password unchanged)")
        for sku, name, quantity in SAMPLE_STOCK:
            if not StockItem.objects.filter(sku=sku).exists():
                stock_item_create(sku=sku, name=name, quantity=quantity)
                self.stdout.write(f"sample stock: {sku} ({name}) x{quantity}")
