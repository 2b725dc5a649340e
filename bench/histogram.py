"""A mergeable latency histogram with about 2% relative precision, cheap enough for the hot loop.

Load-generator processes record microsecond latencies into buckets and send the bucket counts to
the orchestrator, which merges them, so no process ships millions of raw samples to another.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

# Bucket i covers latencies around GROWTH ** i microseconds.
GROWTH = 1.02
_LOG_GROWTH = math.log(GROWTH)


class Histogram:
    """Counts of latencies in microseconds, in logarithmic buckets, plus the exact maximum."""

    __slots__ = ("buckets", "count", "max_us")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.max_us = 0

    def record(self, latency_us: int) -> None:
        latency_us = max(latency_us, 1)
        self.buckets[int(math.log(latency_us) / _LOG_GROWTH)] += 1
        self.count += 1
        self.max_us = max(self.max_us, latency_us)

    def to_json(self) -> dict:
        return {"buckets": {str(index): n for index, n in self.buckets.items()}, "count": self.count, "max_us": self.max_us}

    @classmethod
    def merged(cls, parts: Iterable[Mapping]) -> Histogram:
        """Merge histograms serialized with `to_json`."""
        total = cls()
        for part in parts:
            for index, n in part["buckets"].items():
                total.buckets[int(index)] += n
            total.count += part["count"]
            total.max_us = max(total.max_us, part["max_us"])
        return total

    def percentile_ms(self, fraction: float) -> float | None:
        """Return the latency in milliseconds below which `fraction` of the samples fall; None when empty."""
        if self.count == 0:
            return None
        rank = math.ceil(fraction * self.count)
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                # The upper edge of the bucket, so a percentile is never understated; capped by the max.
                return min(GROWTH ** (index + 1), self.max_us) / 1000
        return self.max_us / 1000

    def summary(self) -> dict[str, float | None]:
        return {
            "p50_ms": _round(self.percentile_ms(0.50)),
            "p95_ms": _round(self.percentile_ms(0.95)),
            "p99_ms": _round(self.percentile_ms(0.99)),
            "max_ms": _round(self.max_us / 1000 if self.count else None),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
