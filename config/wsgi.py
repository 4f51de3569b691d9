import os

from django.core.wsgi import get_wsgi_application

from eventing.telemetry import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Before the application loads its middleware, which tracing extends (only when OTEL_* asks for it).
tracing.configure(service_name="eventmono-web")
application = get_wsgi_application()
