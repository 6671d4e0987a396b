"""Peak resident memory of this process, resettable per measurement (Linux /proc).

Writing "5" to /proc/self/clear_refs resets VmHWM (the peak RSS) to the current RSS, so one worker
process can report the peak of each measurement point on its own. Elsewhere the peak is the
process's lifetime peak (ru_maxrss), which the report flags as cumulative.
"""

import resource
import sys


def reset_peak() -> bool:
    """True when the peak was reset (per-point peaks are exact)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    value = _status_kib("VmHWM")
    if value is not None:
        return value * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def current_rss() -> int | None:
    value = _status_kib("VmRSS")
    return None if value is None else value * 1024


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
