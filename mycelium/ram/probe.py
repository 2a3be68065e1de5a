"""An outside probe of a workload's availability: a stream of requests, and the largest gap in answers.

QEMU's reported downtime is the stop-and-copy window inside QEMU; what a client sees also includes the
network path switching, the guest's own catch-up and the client's retry. The probe asks every endpoint
(the source's and the target's forwarded ports, one thread each, so a dead endpoint's timeouts do not
delay the other) every `interval_s` and records when an answer came; `largest_gap_s()` over all
answers is the downtime a client that always asks both saw.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from mycelium.ram.qemu import request

MAX_SAMPLES = 100_000  # answers kept (bounded: at 5 ms this is over 8 minutes)


@dataclass(slots=True)
class Probe:
    endpoints: list[tuple[str, int]]
    interval_s: float = 0.005
    timeout_s: float = 0.2
    answers: deque = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))  # (monotonic time, endpoint index)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> "Probe":
        for i in range(len(self.endpoints)):
            t = threading.Thread(target=self._run, args=(i,), name=f"ram-probe-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self, i: int) -> None:
        host, port = self.endpoints[i]
        while not self._stop.is_set():
            if request(host, port, b"ping", self.timeout_s):
                self.answers.append((time.monotonic(), i))  # deque.append is atomic
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def largest_gap_s(self, since: float | None = None) -> float:
        times = sorted(t for t, _ in list(self.answers) if since is None or t >= since)
        return max((b - a for a, b in zip(times, times[1:])), default=float("inf"))

    def answered_by(self, index: int, since: float) -> bool:
        return any(i == index and t >= since for t, i in list(self.answers))
