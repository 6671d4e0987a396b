"""Whole-command measurements for the benchmarks: wall time and peak RSS under /usr/bin/time -v.

Peak RSS is /usr/bin/time's "Maximum resident set size" of the command. RSS is also sampled every
0.5 s and attributed to the last line the command logged that starts with one of `phases`, to say
which step peaked. Not getrusage in the calling process: ru_maxrss survives exec, so a child of
this process would inherit its peak.
"""

import os
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_measured(cmd: list[str], log_path: Path, phases: tuple[str, ...] = ()) -> dict:
    """Run `cmd` (its output goes to `log_path`); returns exit code, wall time, peak RSS, sampled peaks per phase."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    state = {"phase": "start", "peaks": {}}
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            rss = sum(_rss(pid) for pid in _children(proc.pid))
            peaks = state["peaks"]
            peaks[state["phase"]] = max(peaks.get(state["phase"], 0), rss)

    threading.Thread(target=sample, daemon=True).start()
    peak_kb = None
    with open(log_path, "w") as log:
        for line in proc.stdout:
            log.write(f"{time.perf_counter() - start:8.1f}s {line}")
            log.flush()
            if "Maximum resident set size (kbytes):" in line:
                peak_kb = int(line.split(":")[1])
            elif phases and line.startswith(phases):
                state["phase"] = line.strip()[:90]
    proc.wait()
    done.set()
    return {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_gb": round(peak_kb * 1024 / 1e9, 2) if peak_kb else None,
            "peak_rss_gib": round(peak_kb / 2**20, 2) if peak_kb else None,
            "sampled_peak_rss_by_phase_gb": {k: round(v / 1e9, 2) for k, v in state["peaks"].items()}}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
