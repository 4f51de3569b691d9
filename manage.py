#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def service_name(argv: list[str]) -> str:
    """What traces call this process: the consumer's or the relay's name, else the command's."""
    command = argv[1] if len(argv) > 1 else "manage"
    if command == "run_consumer" and len(argv) > 2 and not argv[2].startswith("-"):
        return f"eventmono-consumer-{argv[2]}"
    return f"eventmono-{command.replace('_', '-')}"


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    from eventing.telemetry import tracing

    tracing.configure(service_name=service_name(sys.argv))  # only when OTEL_* asks for it
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
