"""Shared pieces of the Python peers: timing with warm-up, and the JSON line each result is."""
import json
import statistics
import time


def timed(fn, warmup, reps):
    """Runs fn() `warmup` times untimed, then `reps` times; returns the times in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def report(impl, test, unit, values):
    """One result as a JSON line on stdout: what scripts/bench reads."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    print(json.dumps({"impl": impl, "test": test, "unit": unit,
                      "mean": statistics.fmean(values), "sd": sd, "n": len(values)}),
          flush=True)
