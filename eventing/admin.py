from django.contrib import admin

from eventing.models import OutboxEvent, ProcessedEvent


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = ["id", "event_type", "event_id", "stream", "occurred_at", "published_at"]
    list_filter = ["event_type", "stream", ("published_at", admin.EmptyFieldListFilter)]
    search_fields = ["event_id"]
    readonly_fields = ["event_id", "event_type", "stream", "payload", "occurred_at", "published_at"]


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(admin.ModelAdmin):
    list_display = ["consumer", "event_id", "processed_at"]
    list_filter = ["consumer"]
    search_fields = ["event_id"]
