"""The garbage collector in long-lived processes: the web workers, the consumers and the relay.

Python's full collection walks every object that survived the younger ones. In a process that has just
imported Django, DRF, pymongo and the apps, and read its settings and URL patterns, that is a few hundred
thousand objects that live as long as the process: a soak at 50 orders/s logged full collections of
60-260 ms in every process, the longest right after start, when all of them collect at about the same time
and the first orders queue behind them. ``freeze_startup_heap`` collects once, before any work, then moves
what is alive out of the collector's sight (``gc.freeze``): later full collections walk only what was made
since.
"""

import gc


def freeze_startup_heap() -> None:
    """Collect, then keep every object alive now out of later collections. Call once, when the process has
    loaded what it will use and before it takes work."""
    gc.collect()
    gc.freeze()
