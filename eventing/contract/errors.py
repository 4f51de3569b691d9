class PermanentError(Exception):
    """Raised by a handler when the event can never be applied (retrying cannot
    help): the event is dead-lettered on its first delivery."""
