#!/usr/bin/env python3
"""Process-level benchmarks of election workers, for scripts/bench: each worker is a program that
logs "I've become master!" when it becomes master, run as a child process on one server.

    python3 scripts/bench_procs.py --connect HOST:PORT --worker NAME=COMMAND ... [--json FILE]
        [--rounds N] [--crash-rounds N] [--idle-s S] [--session-ms MS]

COMMAND is a shell-free template: {connect}, {group}, {session_ms} and {session_s} are replaced,
then it is split on spaces. A worker named in --chroot gets its {group} created first (with kazoo):
tests/original_worker.py has a fixed group, so it runs with {connect}{group} as its chroot. Measured for each worker:
  spawn     start of the process -> its "I've become master!" line, in an empty group
  sigterm   A master, B waiting: SIGTERM to A -> B's "I've become master!" line
  sigkill   the same with SIGKILL (the takeover waits for A's session to expire)
  idle      one lone master, after it settled: RSS, threads, CPU per minute (all workers at
            once, for --idle-s seconds)
Every wait is bounded; a worker that does not log its line in time fails the run.
"""

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time

LIMIT_S = 20.0
MASTER = "I've become master!"


def summarize(samples_s):
    v = sorted(x * 1e3 for x in samples_s)
    n = len(v)
    return {"n": n, "median": statistics.median(v), "p90": v[-(-n * 9 // 10) - 1],
            "min": v[0], "max": v[-1]}


class Child:
    """A worker process whose output lines are read, stamped on arrival, on a thread."""

    def __init__(self, name, argv):
        self.name = name
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put((time.perf_counter(), line.rstrip("\n")))

    def expect(self, text, limit=LIMIT_S):
        """Waits for a line containing `text`; returns the time it arrived."""
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError(f"{self.name}: no line with {text!r} in {limit} s; "
                                   f"saw: {self.seen[-10:]}")
            try:
                at, line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return at

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s; reaps the process."""
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def cpu_ns(pid):
    """CPU time of the live threads of `pid`, in ns (from each thread's schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["VmRSS"][0]), int(fields["Threads"][0])


class Bench:
    def __init__(self, args):
        self.args = args
        self.run = f"{os.getpid()}"
        self.counter = 0
        self.zk = None

    def spawn(self, name, template, group):
        a = self.args
        if name.split()[0] in a.chroot:
            self.ensure_path(group)
        argv = [part.format(connect=a.connect, group=group, session_ms=a.session_ms,
                            session_s=a.session_ms / 1000) for part in template.split()]
        return Child(name, argv)

    def ensure_path(self, path):
        """Creates `path` (a worker that takes it as its chroot needs it to exist)."""
        from kazoo.client import KazooClient  # only workers given to --chroot need kazoo

        if self.zk is None:
            self.zk = KazooClient(hosts=self.args.connect, timeout=4.0)
            self.zk.start(timeout=LIMIT_S)
        self.zk.ensure_path(path)

    def group(self, name):
        self.counter += 1
        return f"/bench-procs/{self.run}/{name}/{self.counter}"

    def spawn_rounds(self, name, template):
        took = []
        for _ in range(self.args.rounds):
            child = self.spawn(name, template, self.group(name))
            took.append(child.expect(MASTER) - child.started)
            child.stop()
        return summarize(took)

    def takeover_rounds(self, name, template, sig, rounds):
        took = []
        for _ in range(rounds):
            group = self.group(name)
            a = self.spawn(name + " A", template, group)
            a.expect(MASTER)
            b = self.spawn(name + " B", template, group)
            b.expect("register ok")
            time.sleep(0.5)  # B reads the group and sets its watches
            t0 = time.perf_counter()
            a.signal(sig)
            took.append(b.expect(MASTER) - t0)
            a.stop()
            b.stop()
        return summarize(took)

    def idle(self, workers):
        children = {name: self.spawn(name, t, self.group(name)) for name, t in workers}
        for child in children.values():
            child.expect(MASTER)
        time.sleep(2.0)  # start-up work (JIT, imports) is not idle time
        before = {n: cpu_ns(c.proc.pid) for n, c in children.items()}
        t0 = time.monotonic()
        time.sleep(self.args.idle_s)
        elapsed = time.monotonic() - t0
        out = {}
        for name, child in children.items():
            rss, threads = status(child.proc.pid)
            cpu_ms = (cpu_ns(child.proc.pid) - before[name]) / 1e6
            out[name] = {"rss_kib": rss, "threads": threads,
                         "cpu_ms_per_min": cpu_ms * 60 / elapsed}
            child.stop()
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", required=True)
    parser.add_argument("--worker", action="append", required=True, metavar="NAME=COMMAND")
    parser.add_argument("--rounds", type=int, default=10, help="spawn and SIGTERM rounds")
    parser.add_argument("--crash-rounds", type=int, default=5, help="SIGKILL rounds")
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--session-ms", type=int, default=2000)
    parser.add_argument("--chroot", action="append", default=[], metavar="NAME",
                        help="the harness creates this worker's {group} first (with kazoo), "
                        "for a worker that uses it as a chroot")
    parser.add_argument("--json")
    args = parser.parse_args()
    workers = [w.split("=", 1) for w in args.worker]
    bench = Bench(args)
    results = {name: {"session_ms": args.session_ms} for name, _ in workers}
    for name, template in workers:
        print(f"procs: {name}: spawn, SIGTERM and SIGKILL rounds ...", file=sys.stderr)
        r = results[name]
        r["spawn_ms"] = bench.spawn_rounds(name, template)
        r["sigterm_ms"] = bench.takeover_rounds(name, template, signal.SIGTERM, args.rounds)
        r["sigkill_ms"] = bench.takeover_rounds(name, template, signal.SIGKILL,
                                                args.crash_rounds)
    print(f"procs: idle for {args.idle_s:g} s, all workers at once ...", file=sys.stderr)
    for name, figures in bench.idle(workers).items():
        results[name]["idle"] = figures
    text = json.dumps(results)
    print(f"procs: {text}")
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
