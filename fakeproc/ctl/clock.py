"""The virtual clock: runs the kernel at ``rate`` virtual seconds per wall second,
or stands still so a test can step it by exact amounts.

Wall time is accounted at every change (pause, rate), so a rate applies only to the
time it was in force and paused wall time never reaches the kernel. All methods run
on the trio thread that owns the kernel.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

PERIOD = 0.05      # wall seconds between ticks while running
STEP_CHUNK = 1.0   # step() advances in chunks of at most this (phases, exit_at stay fine-grained)
MAX_CHUNKS = 10_000
MAX_TICK = 4 * PERIOD  # wall seconds one tick may account for: an emulator that falls
                       # behind lets virtual time slip instead of taking ever-longer steps
TICK_TOUCHES = 10_000_000       # touches one tick may make at most; above, time slips too
TICK_SECONDS = 0.05             # and no more than the server makes in this much wall time,
                                # at the pace measured over earlier ticks (uniform touches
                                # over a large process run ~5x slower than a hot set's)
REQUEST_TICK_SECONDS = 0.01     # the same for the tick a FUSE request or command takes
                                # first: a program's open+read+close is several requests
MIN_TICK_TOUCHES = 10_000
MAX_STEP_TOUCHES = 2_000_000_000  # touches one step may make (10 s to a few minutes)
# where virtual time stops (about 31,700 years: uptime and jiffies stay exact, and a
# clock that reached infinity would break every later step), and the fastest rate
MAX_CLOCK = 1e12
MAX_RATE = 1e9


class VirtualClock:
    """Drives ``kernel.advance``; ``now`` is the kernel's virtual time in seconds."""

    def __init__(self, kernel: "Kernel", rate: float = 1.0, paused: bool = False,
                 period: float = PERIOD) -> None:
        if not rate >= 0:
            raise ValueError(f"the rate must be 0 or more, not {rate}")
        self.kernel = kernel
        self.rate = float(rate)
        self.paused = paused
        self.period = period
        self._last = time.monotonic()  # wall time accounted up to (while running)
        self._wake: trio.Event | None = None
        self.pace: float | None = None  # touches per wall second, as the last timed tick made them

    @property
    def now(self) -> float:
        return self.kernel.clock

    @property
    def running(self) -> bool:
        return not self.paused and self.rate > 0

    def status(self) -> dict[str, Any]:
        return {"now": self.now, "paused": self.paused, "rate": self.rate, "running": self.running}

    def tick(self, work: float = TICK_SECONDS) -> int:
        """Advance by rate x the wall time since the last tick (while running), making
        at most about `work` wall seconds of touches. Called every ``period`` by run(),
        and before every FUSE request and control command (with REQUEST_TICK_SECONDS),
        so what they observe is the kernel as of now, not as of the last periodic tick."""
        now = time.monotonic()
        elapsed, self._last = min(now - self._last, MAX_TICK), now
        if self.running and elapsed > 0:
            seconds = elapsed * self.rate
            load = self.kernel.workload_rate()
            if load > 0:  # the workloads' touches bound a tick too, whatever the rates
                seconds = min(seconds, self.tick_touches(work) / load)
            seconds = min(seconds, MAX_CLOCK - self.kernel.clock)
            if seconds <= 0:
                return 0
            t0 = time.perf_counter()
            touches = self.kernel.advance(seconds)
            self._measure(touches, time.perf_counter() - t0)
            return touches
        return 0

    def request_tick(self) -> int:
        """The tick a FUSE request or a control command takes before it is answered."""
        return self.tick(REQUEST_TICK_SECONDS)

    def tick_touches(self, work: float = TICK_SECONDS) -> int:
        """The most touches a tick of `work` wall seconds may make."""
        if self.pace is None:
            return TICK_TOUCHES
        return int(max(MIN_TICK_TOUCHES, min(TICK_TOUCHES, self.pace * work)))

    def _measure(self, touches: int, took: float) -> None:
        """Keep this tick's pace, when it made enough touches to time."""
        if touches >= MIN_TICK_TOUCHES and took > 0:
            self.pace = touches / took

    def pause(self) -> None:
        self.tick()
        self.paused = True

    def resume(self) -> None:
        self.tick()
        self.paused = False
        self._kick()

    def set_rate(self, rate: float) -> None:
        if not 0 <= rate <= MAX_RATE:
            raise ValueError(f"the rate must be a number from 0 to {MAX_RATE:g}, not {rate}")
        self.tick()
        self.rate = float(rate)
        self._kick()

    def step(self, seconds: float) -> int:
        """Advance exactly ``seconds`` of virtual time now, whether paused or not.
        Returns the touches the workloads made."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"a step must be a finite number of seconds, 0 or more, not {seconds}")
        if self.kernel.clock + seconds > MAX_CLOCK:
            raise ValueError(f"a step of {seconds:g} s would take the virtual clock past "
                             f"{MAX_CLOCK:g} s, where it stops")
        load = self.kernel.workload_rate()
        if load * seconds > MAX_STEP_TOUCHES:
            raise ValueError(f"a step of {seconds:g} s makes {load * seconds:.3g} touches (the "
                             f"workloads run {load:.3g} per second): more than {MAX_STEP_TOUCHES:.0e} "
                             "in one step; step in parts")
        self.tick()
        target = self.kernel.clock + seconds
        n = max(1, min(MAX_CHUNKS, math.ceil(seconds / STEP_CHUNK)))
        touches = 0
        for i in range(n):
            left = target - self.kernel.clock
            touches += self.kernel.advance(left if i == n - 1 else seconds / n)
        return touches

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Tick every ``period`` while running; sleep until resumed otherwise."""
        while True:
            if not self.running:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            await trio.sleep(self.period)
            self.tick()
