"""The outbox and the inbox, for inspection: written by the services and the consumers only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from eventing.models import OutboxEvent, ProcessedEvent


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin[OutboxEvent]):
    list_display = ["id", "event_type", "event_id", "stream", "occurred_at", "published_at"]
    list_filter = ["event_type", "stream", ("published_at", admin.EmptyFieldListFilter)]
    search_fields = ["event_id"]
    readonly_fields = ["event_id", "event_type", "stream", "payload", "occurred_at", "published_at"]


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(admin.ModelAdmin[ProcessedEvent]):
    list_display = ["consumer", "event_id", "processed_at"]
    list_filter = ["consumer"]
    search_fields = ["event_id"]


class ReadOnlyAdminMixin:
    """The record is written by the consumers and the services only: nobody adds, edits or deletes it here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
