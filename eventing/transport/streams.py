"""Names of the streams around a main stream."""

RETRY_MARK = ":retry:"


def dead_letter_stream(stream: str) -> str:
    """Where every group's dead letters of ``stream`` are copied (for tools; the table is the record)."""
    return f"{base_stream(stream)}:dead-letters"


def retry_stream(stream: str, group: str) -> str:
    """Read by ``group`` alone: a dead letter retried from the admin goes back to its own group only."""
    return f"{base_stream(stream)}{RETRY_MARK}{group}"


def base_stream(stream: str) -> str:
    return stream.split(RETRY_MARK, 1)[0]
