"""Pure analysis of what the benchmark recorded: the mock upstream's arrival
log and the burst client's per-request results. No I/O beyond reading files.

Mock log line:   <monotonic_us> <X-Seq or -> <method> <status> <uri>
Burst --results: <index> <status|timeout|error|abandoned> <latency_ms> ...
"""

import math


def read_arrivals(path):
    """[(t_us, seq or None, status, uri)] in arrival order."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                p = line.rstrip("\n").split(" ", 4)
                if len(p) < 5:
                    continue
                seq = int(p[1]) if p[1].isdigit() else None
                out.append((int(p[0]), seq, int(p[3]), p[4]))
    except OSError:
        pass
    return out


def read_results(path):
    """[(index, outcome, latency_ms)] from burst --results."""
    out = []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) >= 3:
                out.append((int(p[0]), p[1], float(p[2])))
    return out


def max_in_window(times_us, window_us):
    """Most instants in any half-open window [t, t + window)."""
    times = sorted(times_us)
    best, j = 0, 0
    for i, t in enumerate(times):
        while t - times[j] >= window_us:
            j += 1
        best = max(best, i - j + 1)
    return best


def window_violations(times_us, limit, window_us):
    """Arrivals that made some window of length window_us hold more than
    limit: arrival i counts when (t_i - window, t_i] holds > limit."""
    times = sorted(times_us)
    bad, j = 0, 0
    for i, t in enumerate(times):
        while t - times[j] >= window_us:
            j += 1
        if i - j + 1 > limit:
            bad += 1
    return bad


def inversions(seqs):
    """Pairs sent in one order and arrived in the other (merge count)."""
    def sort_count(a):
        if len(a) < 2:
            return a, 0
        mid = len(a) // 2
        left, x = sort_count(a[:mid])
        right, y = sort_count(a[mid:])
        merged, n, i, j = [], x + y, 0, 0
        while i < len(left) and j < len(right):
            if left[i] <= right[j]:
                merged.append(left[i])
                i += 1
            else:
                merged.append(right[j])
                n += len(left) - i
                j += 1
        merged.extend(left[i:])
        merged.extend(right[j:])
        return merged, n
    return sort_count(list(seqs))[1]


def percentile(values, p):
    """Nearest-rank percentile; None for no values."""
    v = sorted(values)
    if not v:
        return None
    rank = max(1, int(math.ceil(p * len(v))))
    return v[rank - 1]


def rate_over(times_us):
    """Achieved rate between the first and the last instant, per second."""
    if len(times_us) < 2:
        return None
    span = (max(times_us) - min(times_us)) / 1e6
    return (len(times_us) - 1) / span if span > 0 else None


def arrivals_during_pause(arrivals, pause_us):
    """Arrivals inside (t, t + pause) of some earlier 429/503 that announced
    that pause; each arrival counted once."""
    n, until = 0, None
    for t, _seq, status, _uri in sorted(arrivals, key=lambda a: a[0]):
        if until is not None and t < until:
            n += 1
        if status in (429, 503):
            until = max(until or 0, t + pause_us)
    return n


def client_outcomes(results):
    """Counts by outcome name ("200", "503", "timeout"...)."""
    out = {}
    for _i, outcome, _lat in results:
        out[outcome] = out.get(outcome, 0) + 1
    return out


def cumulative(times_us, t0_us):
    """(seconds since t0, arrivals so far) for a step plot."""
    return [((t - t0_us) / 1e6, i + 1) for i, t in enumerate(sorted(times_us))]
