from typing import Any

from eventing.event_log import EventRecord


def event_log_list(
    *, correlation_id: str | None = None, aggregate_id: str | None = None, event_type: str | None = None
) -> Any:
    filters: dict[str, Any] = {}
    if correlation_id:
        filters["correlation_id"] = correlation_id
    if aggregate_id:
        filters["aggregate_id"] = aggregate_id
    if event_type:
        filters["type"] = event_type
    return EventRecord.objects(**filters).order_by("occurred_at", "stream_ms", "stream_seq")
