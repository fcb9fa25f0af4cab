"""Reading valgrind cachegrind output: the simulated cache and the parser of
``cachegrind.out`` files.  Which functions' counts make up one product of each format
(scipy's compiled kernels, OpenBLAS, numba's JIT code) is declared with the formats
(:data:`blockprune_utils.bench.formats.SIMULATED`)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# The simulated cache: (size bytes, associativity, line bytes).  D1 as the study
# machine's L1d (32 KiB, 8-way, 64 B lines); LL as one core's L2 there (512 KiB,
# 8-way).  cachegrind models two levels only, so the shared L3 is not simulated.
CACHE = {"I1": (32768, 8, 64), "D1": (32768, 8, 64), "LL": (524288, 8, 64)}

EVENTS = ("Ir", "Dr", "Dw", "D1mr", "D1mw", "DLmr", "DLmw")


def cache_description() -> str:
    """The simulated data caches in words, e.g. ``D1 32 KiB 8-way 64 B, LL 512 KiB 8-way 64 B``."""
    return ", ".join(f"{name} {size // 1024} KiB {assoc}-way {line} B" for name, (size, assoc, line) in CACHE.items()
                     if name != "I1")


@dataclass
class Cachegrind:
    """Counts from one cachegrind output file: ``totals`` over the whole run and
    ``functions`` (name -> counts, exclusive of callees) for every function."""

    events: list[str]
    totals: dict[str, int]
    functions: dict[str, dict[str, int]] = field(default_factory=dict)
    command: str = ""

    def select(self, pattern: str) -> dict[str, int]:
        """Summed counts of the functions whose name matches ``pattern`` (re.search)."""
        rx = re.compile(pattern)
        out = dict.fromkeys(self.events, 0)
        for name, counts in self.functions.items():
            if rx.search(name):
                for ev, v in counts.items():
                    out[ev] += v
        return out

    def matching(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return sorted(n for n in self.functions if rx.search(n))


def parse_cachegrind(text: str) -> Cachegrind:
    """Parse a ``cachegrind.out`` file (the format of valgrind 3.x).

    Lines: ``events: Ir ...`` names the columns; ``fl=``/``fn=`` set the current
    file and function; a cost line is a line number followed by up to len(events)
    counts (missing trailing counts are zero); ``summary:`` holds the totals.
    When the summary is absent the totals are the sum over functions."""
    events: list[str] = []
    functions: dict[str, dict[str, int]] = {}
    summary = None
    command = ""
    fn = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("events:"):
            events = line.split(":", 1)[1].split()
        elif line.startswith("cmd:"):
            command = line.split(":", 1)[1].strip()
        elif line.startswith("fn="):
            fn = line[3:]
            functions.setdefault(fn, dict.fromkeys(events, 0))
        elif line.startswith(("fl=", "fi=", "fe=")):
            continue
        elif line.startswith("summary:"):
            summary = [int(v) for v in line.split(":", 1)[1].split()]
        elif line[0].isdigit():
            if fn is None or not events:
                raise ValueError(f"cachegrind cost line before 'events:'/'fn=': {raw!r}")
            values = [int(v) for v in line.split()[1:]]
            if len(values) > len(events):
                raise ValueError(f"cachegrind cost line has {len(values)} counts for {len(events)} events: {raw!r}")
            counts = functions[fn]
            for ev, v in zip(events, values):
                counts[ev] += v
        # desc:, positions:, totals: and anything unknown are ignored
    if not events:
        raise ValueError("not a cachegrind output: no 'events:' line")
    if summary is not None:
        totals = dict(zip(events, summary + [0] * (len(events) - len(summary))))
    else:
        totals = dict.fromkeys(events, 0)
        for counts in functions.values():
            for ev, v in counts.items():
                totals[ev] += v
    return Cachegrind(events=events, totals=totals, functions=functions, command=command)


def difference(more: dict[str, int], fewer: dict[str, int]) -> dict[str, int]:
    """Event counts of one run minus those of another (``more - fewer``, per event), at
    least 0: ``more`` does all the work of ``fewer`` and more, so a negative difference is
    run-to-run noise of a few events (a cache line the shorter run happened to miss once)."""
    return {ev: max(0, more.get(ev, 0) - fewer.get(ev, 0)) for ev in set(more) | set(fewer)}


def per_product(counts: dict[str, int], n: int) -> dict[str, float]:
    """Counts of one product, and its miss ratios (relative to its data references)."""
    c = {ev: counts.get(ev, 0) / n for ev in EVENTS}
    refs = c["Dr"] + c["Dw"]
    d1 = c["D1mr"] + c["D1mw"]
    ll = c["DLmr"] + c["DLmw"]
    return {
        "instructions": c["Ir"], "data_refs": refs, "d1_misses": d1, "ll_misses": ll,
        "d1_miss_ratio": d1 / refs if refs else float("nan"),
        "ll_miss_ratio": ll / refs if refs else float("nan"),
        "ll_local_miss_ratio": ll / d1 if d1 else float("nan"),
    }
