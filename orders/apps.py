from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders"
    # events.py, signals.py and handlers.py are imported and connected by
    # EventingConfig.ready(), which discovers them in every app.
