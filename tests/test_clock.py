"""The virtual clock's tick bound (ctl/clock.py), with a stand-in kernel and a wall
clock the test moves: a tick makes no more touches than the server makes in
TICK_SECONDS at the pace earlier ticks showed, so a request never waits long for it."""
from __future__ import annotations

import pytest

from fakeproc.ctl import clock as clock_mod
from fakeproc.ctl.clock import (MIN_TICK_TOUCHES, REQUEST_TICK_SECONDS, TICK_SECONDS, TICK_TOUCHES,
                                VirtualClock)


class Wall:
    """time.monotonic and time.perf_counter, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Kernel:
    """Workloads of `load` touches per virtual second, made at `pace` per wall second."""

    def __init__(self, wall: Wall, load: float, pace: float) -> None:
        self.wall, self.load, self.pace = wall, load, pace
        self.clock = 0.0
        self.calls: list[int] = []

    def workload_rate(self) -> float:
        return self.load

    def advance(self, seconds: float) -> int:
        touches = int(seconds * self.load)
        self.clock += seconds
        self.wall.now += touches / self.pace
        self.calls.append(touches)
        return touches


@pytest.fixture
def wall(monkeypatch):
    w = Wall()
    monkeypatch.setattr(clock_mod.time, "monotonic", w)
    monkeypatch.setattr(clock_mod.time, "perf_counter", w)
    return w


def test_a_tick_is_bounded_by_the_pace_the_last_one_showed(wall):
    # 1e9 touches a virtual second at rate 1: every tick is cut; the server makes
    # 2e7 touches a wall second, so after the first tick (TICK_TOUCHES, 0.5 s) a
    # tick makes 2e7 * TICK_SECONDS = 1e6 touches (50 ms)
    k = Kernel(wall, load=1e9, pace=2e7)
    c = VirtualClock(k)  # type: ignore[arg-type]
    for _ in range(3):
        wall.now += 0.2
        c.tick()
    assert k.calls == [TICK_TOUCHES, int(2e7 * TICK_SECONDS), int(2e7 * TICK_SECONDS)]
    # a request's tick does a fifth of a periodic one's work (10 ms at that pace)
    wall.now += 0.2
    c.request_tick()
    assert k.calls[-1] == int(2e7 * REQUEST_TICK_SECONDS)


def test_the_bound_stays_within_its_limits(wall):
    fast = Kernel(wall, load=1e12, pace=1e12)  # faster than any server: TICK_TOUCHES
    c = VirtualClock(fast)  # type: ignore[arg-type]
    wall.now += 0.2
    c.tick()
    assert c.tick_touches() == TICK_TOUCHES
    slow = Kernel(wall, load=1e9, pace=1e3)  # a crawl: never below MIN_TICK_TOUCHES
    c = VirtualClock(slow)  # type: ignore[arg-type]
    wall.now += 0.2
    c.tick()
    assert c.tick_touches() == MIN_TICK_TOUCHES


def test_a_tick_too_small_to_time_keeps_the_bound(wall):
    k = Kernel(wall, load=100.0, pace=1.0)  # 20 touches a tick: too few to time
    c = VirtualClock(k)  # type: ignore[arg-type]
    wall.now += 0.2
    c.tick()
    assert k.calls == [20] and c.tick_touches() == TICK_TOUCHES
