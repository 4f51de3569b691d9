"""The outbox and the inbox, for inspection: written by the services and the consumers only."""

from __future__ import annotations

from django.contrib import admin

from core.admin import ReadOnlyAdminMixin
from eventing.models import OutboxEvent, ProcessedEvent


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[OutboxEvent]):
    list_display = ["id", "event_type", "event_id", "stream", "occurred_at", "published_at"]
    list_filter = ["event_type", "stream", ("published_at", admin.EmptyFieldListFilter)]
    search_fields = ["event_id"]


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[ProcessedEvent]):
    list_display = ["consumer", "event_id", "processed_at"]
    list_filter = ["consumer"]
    search_fields = ["event_id"]
