from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"
    verbose_name = "Inventory"
    # events.py, signals.py and handlers.py are imported and connected by
    # EventingConfig.ready(), which discovers them in every app.
