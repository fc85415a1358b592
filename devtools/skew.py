"""A process whose wall clock is off by N seconds: libfaketime, preloaded into a subprocess.

A worker on a machine whose clock drifted is a real failure mode (NTP down, a VM resumed from a
snapshot): it computes retry times, leases and message ETAs from its own `time.time()`. To test that,
the whole process must see the skewed clock, C extensions and the Dramatiq broker included, which no
Python-level patch (freezegun, time-machine) gives. libfaketime does: LD_PRELOAD interposes
`clock_gettime(CLOCK_REALTIME)`, `gettimeofday` and `time`, so `time.time()` and `datetime.now()` move,
and forked children (Dramatiq's worker processes) inherit it.

The monotonic clock is left alone (`DONT_FAKE_MONOTONIC`): asyncio, `time.sleep` and timeouts run on
it, and a faked one hangs Python's event loop. A skewed machine's monotonic clock is not skewed either,
so this is the honest model. The library comes from the `libfaketime` package on PyPI (a dev extra),
which builds and ships `libfaketime.so.1`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def faketime_library() -> Path:
    """The preloadable libfaketime.so.1 of the installed `libfaketime` package (found without importing it:
    its __init__ pulls in pytz and dateutil, which the caller does not need)."""
    spec = importlib.util.find_spec("libfaketime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the libfaketime package is not installed (it is in the dev extra: pip install -e '.[dev]')")
    library = Path(next(iter(spec.submodule_search_locations))) / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    if not library.exists():
        raise RuntimeError(f"libfaketime's shared library is missing at {library}")
    return library


def faketime_offset(seconds: float) -> str:
    """libfaketime's relative offset, e.g. '+5.000000s' or '-2.500000s'."""
    return f"{seconds:+f}s"


def skewed_env(seconds: float, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a subprocess whose wall clock runs `seconds` ahead (negative: behind) of this
    machine's; `base` (default: this process's environment) with libfaketime's variables added."""
    env = dict(os.environ if base is None else base)
    preload = [str(faketime_library()), *filter(None, env.get("LD_PRELOAD", "").split(":"))]
    env.update(
        LD_PRELOAD=":".join(preload),
        FAKETIME=faketime_offset(seconds),
        # Both spellings: older libfaketime reads the first, newer ones the second.
        DONT_FAKE_MONOTONIC="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    return env
