"""The peak resident size of this process from a chosen moment (Linux: /proc/self/status).

    start = reset_peak()          # the peak restarts at the current resident size
    ...                           # the work to measure
    grown = peak_growth(start)    # bytes the peak rose above `start`

`clear_refs` restarts VmHWM; ru_maxrss would also hold the parent's size at a fork.
"""


def _status_kb(field):
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(field + ":")))


def reset_peak():
    """Restart the peak at the current resident size -> that size in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS") * 1024


def peak_growth(start):
    """Bytes the peak resident size rose above `start` (from `reset_peak`)."""
    return _status_kb("VmHWM") * 1024 - start
