"""The garbage collector's tuning: what `settle_heap` does, and that only the command line's app does it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

import apis.app
from emulator import BingEmulator
from tests.servers import ServerThread, service_settings
from utils.heap import OLDER_THRESHOLDS, YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_heap_freezes_the_startup_heap_and_raises_the_threshold(restored_gc: None) -> None:
    survivor = [object() for _ in range(10)]  # alive at startup: frozen, never walked again
    assert gc.get_freeze_count() == 0
    settle_heap()
    assert gc.get_freeze_count() > len(survivor)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    assert gc.get_count()[0] < YOUNG_THRESHOLD


def test_cycles_are_still_collected_after_settling(restored_gc: None) -> None:
    settle_heap()

    class Node:
        peer: object

    for _ in range(3):
        a, b = Node(), Node()
        a.peer, b.peer = b, a
    del a, b
    assert gc.collect() >= 6  # the three unreachable pairs go at the next collection, as before


@pytest.mark.parametrize("own_process", [True, False])
def test_only_an_app_that_owns_its_process_settles_the_heap(
    emulator: BingEmulator, monkeypatch: pytest.MonkeyPatch, own_process: bool
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(apis.app, "settle_heap", lambda: calls.append(True))
    with ServerThread(service_settings(emulator, warm_pool_size=0), own_process=own_process):
        pass
    assert calls == ([True] if own_process else [])
