from django.db import models


class OutboxEvent(models.Model):
    """An event committed with the change that caused it, waiting to be (or
    already) published to its stream. The auto-increment id keeps publication
    in commit order."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=100)
    stream = models.CharField(max_length=200)
    payload = models.TextField(help_text="The envelope as JSON.")
    occurred_at = models.DateTimeField()
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["id"], name="outbox_unpublished", condition=models.Q(published_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class ProcessedEvent(models.Model):
    """The inbox: which consumer has applied which event. Written in the same
    transaction as the handler's effect, so a redelivery is recognised."""

    consumer = models.CharField(max_length=100)
    event_id = models.UUIDField()
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["consumer", "event_id"], name="inbox_once_per_consumer")]

    def __str__(self) -> str:
        return f"{self.consumer} {self.event_id}"
