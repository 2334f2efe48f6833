#!/usr/bin/env python3
"""kazoo's Election recipe measured the way examples/bench measures zk-master, for scripts/bench.

    python3 scripts/bench_kazoo.py bench --connect HOST:PORT [--rounds 60] [--json FILE]
        join: a new client and Election.run() in an empty group until the leader function runs;
        graceful takeover: A's leader function returns (the lock's node is deleted) and A's
        session closes -> B's leader function runs; the floor: one exists() round trip on a
        connected client; is_master: reading the recipe's `lock.is_acquired` attribute.
    python3 scripts/bench_kazoo.py scale --connect HOST:PORT --members N,N,.. [--rounds R]
        N clients (N sessions, 20 s) in one Election; time for all to join, takeover latency, and
        per takeover the server's watch events fired, packets and response bytes (`mntr`).
    python3 scripts/bench_kazoo.py worker HOST:PORT GROUP SESSION_S
        tests/original_worker.py with one change: SIGTERM closes the session (so its node goes at
        once) before exiting; the process-level takeover benchmark runs it.

Sessions ask for a 4 s timeout, like the Rust bench. Every wait is bounded; a round that exceeds
a bound fails the run. Needs kazoo (`pip install kazoo` or Debian's python3-kazoo).
"""

import argparse
import json
import logging
import os
import signal
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


def summarize(samples_s):
    """Summary in milliseconds, nearest-rank p90."""
    v = sorted(x * 1e3 for x in samples_s)
    n = len(v)
    return {"n": n, "median": statistics.median(v), "p90": v[-(-n * 9 // 10) - 1],
            "min": v[0], "max": v[-1]}


def client(connect, timeout=SESSION_S):
    c = KazooClient(hosts=connect, timeout=timeout)
    c.start(timeout=LIMIT_S)
    return c


def close(*clients):
    for c in clients:
        c.stop()
        c.close()


def wait_until(what, predicate):
    deadline = time.monotonic() + LIMIT_S
    while not predicate():
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.001)


class Contender:
    """One Election.run() on its own thread; `led_at` is stamped when the leader function runs."""

    def __init__(self, c, path, name):
        self.election = Election(c, path, name)
        self.leads, self.release = threading.Event(), threading.Event()
        self.led_at = None
        self.thread = threading.Thread(target=self.election.run, args=(self._lead,), daemon=True)
        self.thread.start()

    def _lead(self):
        self.led_at = time.perf_counter()
        self.leads.set()
        self.release.wait(LIMIT_S * 4)

    def wait_leads(self, who):
        if not self.leads.wait(LIMIT_S):
            raise RuntimeError(f"{who} did not lead")

    def step_down(self):
        self.release.set()
        self.thread.join(LIMIT_S)
        if self.thread.is_alive():
            raise RuntimeError("a contender did not step down")


def join_round(connect, path):
    start = time.perf_counter()
    c = client(connect)
    me = Contender(c, path, "a")
    me.wait_leads("the only contender")
    took = me.led_at - start
    me.step_down()
    close(c)
    return took


def takeover_round(connect, path):
    """Returns A steps down -> B leads, in seconds."""
    a, b = client(connect), client(connect)
    try:
        ca = Contender(a, path, "a")
        ca.wait_leads("A")
        cb = Contender(b, path, "b")
        # B has registered when the election has two contender nodes; then let it set its watch.
        wait_until("B to register", lambda: len(a.get_children(path)) == 2)
        time.sleep(SETTLE_S)
        if cb.leads.is_set():
            raise RuntimeError("B leads while A does")
        start = time.perf_counter()
        ca.step_down()
        a.stop()  # closes A's session, as zk-master's resign() does after deleting its node
        cb.wait_leads("B")
        took = cb.led_at - start
        cb.step_down()
        return took
    finally:
        close(a, b)


def floor(connect, path, calls):
    c = client(connect)
    try:
        c.ensure_path(path)
        samples = []
        for i in range(calls + WARMUP):
            start = time.perf_counter()
            c.exists(path)
            if i >= WARMUP:
                samples.append(time.perf_counter() - start)
        return samples
    finally:
        close(c)


def is_master_ns(connect, path):
    """ns per read of the leader's `lock.is_acquired` (the recipe has no is_master()),
    median of 5 runs of 1M reads, loop overhead included."""
    c = client(connect)
    try:
        me = Contender(c, path, "m")
        me.wait_leads("the leader")
        lock, runs = me.election.lock, []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(1_000_000):
                lock.is_acquired
            runs.append((time.perf_counter() - start) * 1e3)
        me.step_down()
        return statistics.median(runs)
    finally:
        close(c)


def mntr(connect):
    """The server's `mntr` counters that a takeover moves: watch events fired, packets sent,
    response bytes."""
    import socket

    host, port = connect.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(b"mntr")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    values = dict(line.split("\t", 1) for line in data.decode().splitlines() if "\t" in line)
    fired = sum(float(values.get(f"zk_sum_node_{k}_watch_count", "nan"))
                for k in ("created", "deleted", "children", "changed"))
    return [fired, float(values.get("zk_packets_sent", "nan")),
            float(values.get("zk_response_bytes", "nan"))]


def scale(connect, path, members, rounds):
    """N clients in one election: all joined, then `rounds` takeovers of the oldest contender."""
    start = time.perf_counter()
    clients = [client(connect, 20.0) for _ in range(members)]
    clients[0].ensure_path(path)
    contenders = []
    for i, c in enumerate(clients):
        # One at a time, so that the i-th contender's node is the i-th in the queue.
        contenders.append(Contender(c, path, str(i)))
        wait_until("a contender to register", lambda: len(c.get_children(path)) == i + 1)
    contenders[0].wait_leads("the first")
    joined = time.perf_counter() - start
    takeovers, deltas = [], []
    for r in range(min(rounds, members - 1)):
        time.sleep(SETTLE_S * 4)
        before = mntr(connect)
        t0 = time.perf_counter()
        contenders[r].step_down()
        contenders[r + 1].wait_leads("the next")
        takeovers.append(contenders[r + 1].led_at - t0)
        time.sleep(SETTLE_S * 2)
        deltas.append([a - b for a, b in zip(mntr(connect), before)])
    for c in contenders[len(takeovers):]:
        c.step_down() if c.leads.is_set() else c.election.cancel()
    close(*clients)
    per = [statistics.median(d[i] for d in deltas) if deltas else None for i in range(3)]
    return {"members": members, "join_all_s": joined,
            "takeover_ms": summarize(takeovers) if takeovers else None,
            "notifications_per_takeover": per[0], "server_packets_per_takeover": per[1],
            "server_response_bytes_per_takeover": per[2]}


def worker(connect, group, session_s):
    """tests/original_worker.py, plus: SIGTERM closes the session before the process exits."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    log = logging.getLogger("kazoo-port")
    zk = KazooClient(hosts=connect, timeout=session_s)
    zk.start()
    zk.ensure_path(group)
    me = zk.create(group + "/worker", b"1", ephemeral=True, sequence=True).rsplit("/", 1)[1]
    log.info("register ok! I'm %s", me)

    def check(children):
        workers = sorted(children)
        if workers and workers[0] == me:
            log.info("I've become master!")
        else:
            log.info("%s is masters, I'm slave", workers[:1])
        sys.stdout.flush()

    def on_term(_signum, _frame):
        zk.stop()  # closes the session: the server deletes our node at once
        zk.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    zk.ChildrenWatch(group, check)
    for _ in range(600):  # bounded: ten minutes at most
        time.sleep(1)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["bench", "scale"])
    parser.add_argument("--connect", required=True, help="HOST:PORT of a ZooKeeper server")
    parser.add_argument("--rounds", type=int, default=60, help="rounds (first 10 discarded)")
    parser.add_argument("--members", default="2,10,100", help="scale: group sizes")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    if args.mode == "bench" and not WARMUP < args.rounds <= 10000:
        parser.error(f"--rounds must be from {WARMUP + 1} to 10000")
    logging.basicConfig(level=logging.WARNING)
    import kazoo.version  # noqa: E402 (after the friendly ImportError above)

    base = f"/bench-kazoo/{os.getpid()}"
    if args.mode == "scale":
        result = [scale(args.connect, f"{base}/scale{n}", int(n), args.rounds)
                  for n in args.members.split(",") if n]
    else:
        print(f"kazoo {kazoo.version.__version__}, python {sys.version.split()[0]}, "
              f"{args.rounds} rounds", file=sys.stderr)
        joins = [join_round(args.connect, f"{base}/join{i}") for i in range(args.rounds)]
        takeovers = [takeover_round(args.connect, f"{base}/takeover{i}")
                     for i in range(args.rounds)]
        result = {
            "impl": "kazoo", "version": kazoo.version.__version__,
            "join_ms": summarize(joins[WARMUP:]),
            "takeover_ms": summarize(takeovers[WARMUP:]),
            "floor_ms": summarize(floor(args.connect, base + "/floor", args.rounds * 5)),
            "is_master_ns": is_master_ns(args.connect, base + "/is-master"),
        }
    text = json.dumps(result)
    print(f"kazoo: {text}")
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
