"""core.heap: what a long-lived process keeps out of the collector once started."""

import gc

from core.heap import freeze_startup_heap


def test_the_startup_heap_is_kept_out_of_later_collections_and_new_garbage_is_still_collected():
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    gc.unfreeze()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000  # the modules, settings and the rest of the heap as started

        garbage = Node()
        del garbage
        assert gc.collect() >= 1  # what is made after still gets collected
    finally:
        gc.unfreeze()  # the rest of the suite runs as before
