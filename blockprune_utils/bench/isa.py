"""The instruction set the numba kernels are compiled for, and the one valgrind can run.

numba compiles for a *target*: LLVM's name of a CPU and a list of its instruction-set
features (``+avx2,-avx512f,...``), by default the host's, else what ``NUMBA_CPU_NAME`` /
``NUMBA_CPU_FEATURES`` say.  :func:`numba_target` reads the target numba really uses
(so the timings' rows can say which instruction set ran, :func:`isa_of`: ``avx512``,
``avx2``, ...).

valgrind decodes x86-64 up to AVX2 with FMA and BMI (LLVM's x86-64-v3 level); no
release decodes AVX-512 (EVEX-encoded) or the newer extensions, and an instruction it
cannot decode kills the program with SIGILL.  :func:`valgrind_target` is the target a
kernel is counted with under cachegrind: the timed target's CPU name (its tuning: the
same scheduling and unrolling choices) with every feature turned off that valgrind
cannot decode or that this host lacks.  On an AVX2 host that is the timed code
itself; on an AVX-512 host it is the same kernel limited to AVX2, and the rows say so.

Machine code and other CPUs: the kernels' hand-written LLVM (the ``<k x float>``
multiply-adds of :mod:`blockprune_utils.bsr.jit`, the ``<8 x float>`` shuffles of
:mod:`blockprune_utils.bsr.transpose`) is generic IR that LLVM lowers for whatever
target it compiles for (SSE2 splits a vector in halves; without FMA a multiply-add
is a multiply and an add).  numba's disk cache (``cache=True``) keys every entry by
the target (triple, CPU name, feature string), so processes on different CPUs that
share a cache folder each load only code compiled for their own target.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

# LLVM's names of the x86-64 features valgrind's amd64 decoder runs: the x86-64-v3 level
# (x86-64 baseline, then v2: cx16 sahf popcnt sse3 ssse3 sse4.1 sse4.2 crc32, then v3:
# avx avx2 bmi bmi2 f16c fma lzcnt movbe xsave).  Everything else (avx512*, amx*, avxvnni,
# gfni, vaes, sse4a, ...) is turned off for the counted code.
VALGRIND_X86_FEATURES = frozenset({
    "64bit", "cmov", "cx8", "fxsr", "mmx", "sse", "sse2", "x87",
    "cx16", "sahf", "popcnt", "sse3", "ssse3", "sse4.1", "sse4.2", "crc32",
    "avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave",
})


def enabled(features: str) -> set[str]:
    """The features an LLVM feature string turns on (``+name``)."""
    return {f[1:] for f in features.split(",") if f.startswith("+")}


def is_x86(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def isa_of(features: str, machine: str | None = None) -> str:
    """The widest vector instruction set a feature string turns on: ``avx512`` (AVX-512
    F), ``avx2``, ``avx``, ``sse4.2``, ``sse2`` on x86; ``sve`` or ``neon`` on ARM;
    else the machine name."""
    on = enabled(features)
    if is_x86(machine):
        for name, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"), ("sse4.2", "sse4.2")):
            if flag in on:
                return name
        return "sse2"
    if (machine or platform.machine()).lower() in ("aarch64", "arm64"):
        return "sve" if "sve" in on else "neon"
    return (machine or platform.machine()).lower()


@dataclass(frozen=True)
class Target:
    """A numba (LLVM) target: the CPU name and the feature string."""

    cpu: str
    features: str

    @property
    def isa(self) -> str:
        return isa_of(self.features)

    def env(self) -> dict:
        """The environment that makes a child's numba compile for this target (and read
        the disk-cache entries of this target only: numba's cache keys hold the target)."""
        return {"NUMBA_CPU_NAME": self.cpu, "NUMBA_CPU_FEATURES": self.features}

    def describe(self) -> str:
        """E.g. ``znver4 (avx2)``."""
        return f"{self.cpu} ({self.isa})"


def numba_target() -> Target:
    """The target this process's numba compiles for (its host, unless ``NUMBA_CPU_NAME``
    / ``NUMBA_CPU_FEATURES`` are set)."""
    from numba.core.registry import cpu_target

    _, cpu, features = cpu_target.target_context.codegen().magic_tuple()
    return Target(cpu, features)


@functools.lru_cache(maxsize=1)
def host_feature_map() -> dict[str, bool]:
    """Every feature LLVM's host detection knows, and whether this host's CPU has it."""
    import llvmlite.binding as ll

    return dict(ll.get_host_cpu_features().items())


def _flags(features: str) -> dict[str, bool]:
    return {f.lstrip("+-"): not f.startswith("-") for f in features.split(",") if f.strip("+-")}


def valgrind_target(target: Target | None = None, host: dict[str, bool] | None = None) -> Target:
    """The target a kernel of ``target`` (default: :func:`numba_target`) is counted with
    under valgrind: the same CPU name, each feature kept on only when valgrind decodes it
    (:data:`VALGRIND_X86_FEATURES`) and this host has it (``host``: name -> present,
    default :func:`host_feature_map`), every other one turned off - also those the
    feature string does not name, which the CPU name would otherwise turn on.  Not
    x86: ``target`` itself."""
    t = target or numba_target()
    if not is_x86():
        return t
    host = host_feature_map() if host is None else host
    keep = {name for name, on in host.items() if on} & VALGRIND_X86_FEATURES
    flags = _flags(t.features)
    out = [("+" if on and name in keep else "-") + name for name, on in flags.items()]
    out += [f"-{name}" for name in sorted(host) if name not in flags and name not in VALGRIND_X86_FEATURES]
    return Target(t.cpu, ",".join(out))
