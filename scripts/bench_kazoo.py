#!/usr/bin/env python3
"""Graceful takeover latency with kazoo's Election recipe, for comparison with
`cargo run --release --example bench` (examples/bench.rs).

Each round: client A runs Election.run() and leads; client B (its own session) joins the same
election and waits. Then A steps down (its leader function returns, so the recipe's lock releases
and deletes A's node) and its session is closed. Measured: from just before A steps down to the
moment B's leader function is entered (time.perf_counter on B's thread), like the Rust bench's
B.wait_until_master() observer. Also measured: how long A's step-down took (until its node was
deleted and Election.run() returned). Sessions ask for a 4 s timeout, like the Rust bench.

    pip install kazoo
    python3 scripts/bench_kazoo.py --connect 127.0.0.1:2181 [--rounds 60]

Every wait is bounded; a round that exceeds a bound fails the run.
"""

import argparse
import logging
import os
import statistics
import sys
import threading
import time

try:
    from kazoo.client import KazooClient
    from kazoo.recipe.election import Election
except ImportError:
    sys.exit("bench_kazoo: kazoo is not installed (pip install kazoo)")

WARMUP = 10
SESSION_S = 4.0
LIMIT_S = 15.0
SETTLE_S = 0.05


def summarize(samples):
    v = sorted(samples)
    n = len(v)
    p90 = v[-(-n * 9 // 10) - 1]  # nearest rank
    return {"n": n, "median": statistics.median(v), "p90": p90, "max": v[-1], "min": v[0]}


def client(connect):
    c = KazooClient(hosts=connect, timeout=SESSION_S)
    c.start(timeout=LIMIT_S)
    return c


def wait_until(what, predicate):
    deadline = time.monotonic() + LIMIT_S
    while not predicate():
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.001)


def takeover_round(connect, path):
    """Returns (A steps down -> B leads, A's step-down duration), in seconds."""
    a, b = client(connect), client(connect)
    try:
        a_leads, a_release = threading.Event(), threading.Event()
        b_leads, b_release = threading.Event(), threading.Event()
        b_led_at = []

        def a_func():
            a_leads.set()
            a_release.wait(LIMIT_S)

        def b_func():
            b_led_at.append(time.perf_counter())
            b_leads.set()
            b_release.wait(LIMIT_S)

        ta = threading.Thread(target=Election(a, path, "a").run, args=(a_func,), daemon=True)
        ta.start()
        if not a_leads.wait(LIMIT_S):
            raise RuntimeError("A did not lead")
        tb = threading.Thread(target=Election(b, path, "b").run, args=(b_func,), daemon=True)
        tb.start()
        # B has registered when the election has two contender nodes; then let it set its watch.
        wait_until("B to register", lambda: len(a.get_children(path)) == 2)
        time.sleep(SETTLE_S)
        if b_leads.is_set():
            raise RuntimeError("B leads while A does")

        start = time.perf_counter()
        a_release.set()
        ta.join(LIMIT_S)
        stepped_down = time.perf_counter() - start
        if ta.is_alive():
            raise RuntimeError("A did not step down")
        a.stop()  # closes A's session, as the Rust library does after resign() deletes the node
        if not b_leads.wait(LIMIT_S):
            raise RuntimeError("B did not lead")
        took = b_led_at[0] - start
        b_release.set()
        tb.join(LIMIT_S)
        return took, stepped_down
    finally:
        for c in (a, b):
            c.stop()
            c.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", required=True, help="HOST:PORT of a ZooKeeper server")
    parser.add_argument("--rounds", type=int, default=60, help="rounds (first 10 discarded)")
    parser.add_argument("--path", default=f"/bench-kazoo/{os.getpid()}/election")
    args = parser.parse_args()
    if not WARMUP < args.rounds <= 10000:
        parser.error(f"--rounds must be from {WARMUP + 1} to 10000")
    logging.basicConfig(level=logging.WARNING)

    import kazoo.version  # noqa: E402 (after the friendly ImportError above)

    print(f"kazoo {kazoo.version.__version__}, python {sys.version.split()[0]}, "
          f"{args.rounds} rounds", file=sys.stderr)
    latencies, step_downs = [], []
    for i in range(args.rounds):
        took, stepped_down = takeover_round(args.connect, args.path)
        if i >= WARMUP:
            latencies.append(took)
            step_downs.append(stepped_down)
    lat, down = summarize(latencies), summarize(step_downs)

    def row(name, s):
        print(f"{name + ' (n=' + str(s['n']) + ')':<44} {s['median'] * 1e3:>10.3f} "
              f"{s['p90'] * 1e3:>10.3f} {s['max'] * 1e3:>10.3f} {s['min'] * 1e3:>10.3f}")

    print()
    print(f"kazoo {kazoo.version.__version__} Election recipe  server {args.connect}  "
          f"session timeout {SESSION_S:g}s  rounds {args.rounds} (first {WARMUP} discarded)")
    print()
    print(f"{'latency (ms)':<44} {'median':>10} {'p90':>10} {'max':>10} {'min':>10}")
    row("takeover, A down -> B's func runs", lat)
    row("  A's step-down itself", down)
    print(f"summary: kazoo_takeover_median_ms={lat['median'] * 1e3:.3f} "
          f"kazoo_takeover_p90_ms={lat['p90'] * 1e3:.3f} "
          f"kazoo_stepdown_median_ms={down['median'] * 1e3:.3f}")


if __name__ == "__main__":
    main()
