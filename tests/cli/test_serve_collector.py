"""serve tunes Python's cyclic garbage collector once started (see GC_YOUNG_THRESHOLD)."""

from __future__ import annotations

import gc

from alertengine.cli.serve import GC_YOUNG_THRESHOLD, tune_collector


def test_start_up_objects_are_frozen_and_the_young_generation_is_scanned_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_freeze_count() > 1000                     # start-up's objects are out of sight
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert GC_YOUNG_THRESHOLD >= 10_000
        # cycles are still collected
        class Node:
            other: object = None
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
