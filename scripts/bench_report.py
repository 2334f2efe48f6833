#!/usr/bin/env python3
"""Merges the result files of one scripts/bench run into one table, the goals of issue 11 with
met / not met, and (with --json) one JSON document.

    python3 scripts/bench_report.py DIR [--json FILE]

DIR holds rust.json, rust_scale.json and rust_scale_herd_free.json (examples/bench), and if they ran kazoo.json, kazoo_scale.json
(scripts/bench_kazoo.py), curator.json (examples/curator/CuratorBench.java), procs.json
(scripts/bench_procs.py) and machine.json (written by scripts/bench).
"""

import json
import math
import os
import sys


def load(directory, name):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt(value, digits=2):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, dict):  # a summary: median (p90)
        return f"{fmt(value['median'], digits)} ({fmt(value['p90'], digits)})"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def med(summary):
    return summary["median"] if summary else None


def main():
    if len(sys.argv) not in (2, 4) or (len(sys.argv) == 4 and sys.argv[2] != "--json"):
        sys.exit("usage: bench_report.py DIR [--json FILE]")
    d = sys.argv[1]
    rust, kazoo, curator = load(d, "rust.json"), load(d, "kazoo.json"), load(d, "curator.json")
    procs, machine = load(d, "procs.json") or {}, load(d, "machine.json") or {}
    kazoo_scale = load(d, "kazoo_scale.json") or []
    rust_scale = (load(d, "rust_scale.json") or rust).get("scale", [])
    herd_free_scale = (load(d, "rust_scale_herd_free.json") or {}).get("scale", [])
    peers = {"zk-master": rust, "kazoo": kazoo, "Curator": curator}
    names = [n for n, v in peers.items() if v]

    def proc(worker, key):
        return (procs.get(worker) or {}).get(key)

    def idle(worker, key):
        return ((procs.get(worker) or {}).get("idle") or {}).get(key)

    print()
    print(f"zk-master {rust['version']} vs kazoo {(kazoo or {}).get('version', '-')} vs Curator "
          f"{machine.get('curator', '-')}; ZooKeeper {machine.get('zookeeper', '-')} standalone on "
          f"loopback (tickTime 200 ms)")
    print(f"machine: {machine.get('nproc', '?')} cores, {machine.get('cpu', '?')}, "
          f"load average {machine.get('load', '?')} at the start, {machine.get('load_end', '?')} at the "
          f"end; {machine.get('date', '?')}")
    print("latencies: median (p90) in ms over rounds; x floor = median / that client's own "
          "raw read round trip median")
    print()
    width = 50
    print(f"{'':<{width}}" + "".join(f"{n:>22}" for n in names))
    rows = []

    def row(label, values, digits=2):
        rows.append((label, values))
        print(f"{label:<{width}}" + "".join(f"{fmt(v, digits):>22}" for v in values))

    def each(key):
        return [peers[n].get(key) for n in names]

    row("join: connect + empty group -> master", each("join_ms"))
    row("graceful takeover in process", each("takeover_ms"))
    row("  x floor", [med(peers[n]["takeover_ms"]) / med(peers[n]["floor_ms"]) for n in names], 1)
    row("floor: one raw read round trip", each("floor_ms"), 3)
    row("is_master() / hasLeadership() / is_acquired (ns)", each("is_master_ns"), 1)
    workers = {"zk-master": "zk-master", "kazoo": "kazoo-port", "Curator": "curator"}
    w = [workers[n] for n in names]
    row("process: spawn -> \"I've become master!\"", [proc(x, "spawn_ms") for x in w], 1)
    row("process: SIGTERM -> successor master", [proc(x, "sigterm_ms") for x in w])
    row("  x floor", [med(proc(x, "sigterm_ms")) / med(peers[n]["floor_ms"])
                      if proc(x, "sigterm_ms") else None for x, n in zip(w, names)], 1)
    session_ms = proc("zk-master", "session_ms") or 2000
    row(f"process: SIGKILL -> successor (session {session_ms} ms)",
        [proc(x, "sigkill_ms") for x in w], 0)
    row("idle worker: RSS MiB", [idle(x, "rss_kib") / 1024 if idle(x, "rss_kib") else None
                                 for x in w], 1)
    row("idle worker: threads", [idle(x, "threads") for x in w], 0)
    row("idle worker: CPU ms per minute", [idle(x, "cpu_ms_per_min") for x in w], 1)
    if procs.get("original"):
        o = procs["original"]
        print(f"(kazoo column = the original script's kazoo port with SIGTERM closing the "
              f"session; the original script itself: spawn {fmt(o['spawn_ms'], 1)}, SIGTERM "
              f"{fmt(o['sigterm_ms'], 0)} (it never resigns: its node waits for expiry), "
              f"SIGKILL {fmt(o['sigkill_ms'], 0)}, idle {fmt(o['idle']['rss_kib'] / 1024, 1)} MiB)")
    print(f"floor for zk-master: {rust['floor_how']}")
    print(f"k-th election in one process: {fmt(rust['kth_member_threads'], 1)} threads, "
          f"{fmt(rust['kth_member_kib'], 0)} KiB (first: {fmt(rust['first_member_threads'], 0)} "
          f"threads, {fmt(rust['first_member_kib'], 0)} KiB)")

    print()
    print("scale: N members of one group in one process (20 s sessions); per takeover, medians;")
    print("notifications, packets and response bytes from the server's mntr, bytes received "
          "by the members' sockets from ss; a/b = a members joined of b in the join budget")
    print(f"{'':<10}{'members':>8}{'all joined s':>14}{'takeover ms':>20}{'notifications':>15}"
          f"{'packets':>10}{'resp bytes':>12}{'bytes recv':>12}")
    for label, sizes in (("zk-master", rust_scale), ("herd-free", herd_free_scale),
                        ("kazoo", kazoo_scale)):
        for s in sizes:
            members = s["members"] if s.get("capped_at") is None else \
                f"{s['capped_at']}/{s['members']}"
            print(f"{label:<10}{members:>8}{fmt(s['join_all_s']):>14}"
                  f"{fmt(s['takeover_ms']):>20}{fmt(s.get('notifications_per_takeover'), 0):>15}"
                  f"{fmt(s.get('server_packets_per_takeover'), 0):>10}"
                  f"{fmt(s.get('server_response_bytes_per_takeover'), 0):>12}"
                  f"{fmt(s.get('bytes_received_per_takeover'), 0):>12}")

    goals = []

    def goal(text, met, numbers):
        goals.append({"goal": text, "met": met, "numbers": numbers})

    r = rust
    peer_takeovers = [med(p["takeover_ms"]) for p in (kazoo, curator) if p]
    if peer_takeovers:
        best = min(peer_takeovers)
        goal("graceful takeover <= half of the faster peer's", med(r["takeover_ms"]) <= best / 2,
             f"{med(r['takeover_ms']):.2f} ms vs {best:.2f} ms "
             f"({med(r['takeover_ms']) / best:.2f}x)")
    floor = med(r["floor_ms"])
    goal("graceful takeover within 3 raw round trips", med(r["takeover_ms"]) <= 3 * floor,
         f"{med(r['takeover_ms']):.2f} ms = {med(r['takeover_ms']) / floor:.1f} x {floor:.3f} ms")
    if proc("kazoo-port", "sigterm_ms") and proc("zk-master", "sigterm_ms"):
        z, k = med(proc("zk-master", "sigterm_ms")), med(proc("kazoo-port", "sigterm_ms"))
        goal("SIGTERM takeover <= half of the original script's kazoo port", z <= k / 2,
             f"{z:.2f} ms vs {k:.2f} ms ({z / k:.2f}x)")
    if proc("zk-master", "spawn_ms"):
        s = proc("zk-master", "spawn_ms")
        goal("spawn to known role < 20 ms", med(s) < 20, f"median {med(s):.1f} ms, p90 "
             f"{s['p90']:.1f} ms")
    peer_joins = [med(p["join_ms"]) for p in (kazoo, curator) if p]
    if peer_joins:
        best = min(peer_joins)
        goal("join <= half of the faster peer's", med(r["join_ms"]) <= best / 2,
             f"{med(r['join_ms']):.2f} ms vs {best:.2f} ms ({med(r['join_ms']) / best:.2f}x)")
    if proc("zk-master", "sigkill_ms"):
        s, bound = proc("zk-master", "sigkill_ms"), session_ms + 2 * 200 + 50
        goal(f"crash takeover <= session timeout + 2 ticks + 50 ms ({bound} ms)",
             s["max"] <= bound, f"median {s['median']:.0f} ms, max {s['max']:.0f} ms")
    goal("is_master() < 50 ns", r["is_master_ns"] < 50, f"{r['is_master_ns']:.1f} ns "
         f"(two threads at once: {r['is_master_2t_ns']:.1f} ns)")
    if idle("zk-master", "rss_kib") and idle("kazoo-port", "rss_kib"):
        z, k = idle("zk-master", "rss_kib"), idle("kazoo-port", "rss_kib")
        goal("idle RSS <= a fifth of kazoo's", z <= k / 5, f"{z / 1024:.1f} MiB vs "
             f"{k / 1024:.1f} MiB ({z / k:.2f}x)")
        z, k = idle("zk-master", "cpu_ms_per_min"), idle("kazoo-port", "cpu_ms_per_min")
        goal("idle CPU per minute <= kazoo's", z <= k, f"{z:.1f} ms vs {k:.1f} ms")
    for mode, scale in (("", rust_scale), ("herd-free, ", herd_free_scale)):
        sizes = [s for s in scale if s.get("takeover_ms")]
        two = next((s for s in sizes if s["members"] == 2), None)
        if not (sizes and two):
            continue
        big = sizes[-1]
        ratio = med(big["takeover_ms"]) / med(two["takeover_ms"])
        if big.get("capped_at") is not None:
            label = (f"{big['capped_at']} members (the largest reached: {big['capped_at']} of "
                     f"{big['members']:,} joined within the join budget)")
        else:
            label = f"{big['members']:,} members" + ("" if big["members"] >= 1000
                                                     else " (largest measured)")
        goal(f"{mode}at {label}: <= 2 notifications per takeover",
             big["notifications_per_takeover"] <= 2,
             f"{big['notifications_per_takeover']:.0f} notifications")
        goal(f"{mode}at {label}: takeover within 2x of 2 members", ratio <= 2,
             f"{med(big['takeover_ms']):.1f} ms vs {med(two['takeover_ms']):.1f} ms "
             f"({ratio:.1f}x)")
    goal("k-th election in a process: < 1 thread and < 200 KiB",
         r["kth_member_threads"] < 1 and r["kth_member_kib"] < 200,
         f"{r['kth_member_threads']:.1f} threads, {r['kth_member_kib']:.0f} KiB")

    print()
    print("goals (issue 11), from this run:")
    for g in goals:
        print(f"  {'MET    ' if g['met'] else 'NOT MET'}  {g['goal']}: {g['numbers']}")

    if len(sys.argv) == 4:
        with open(sys.argv[3], "w") as f:
            json.dump({"machine": machine, "zk-master": rust, "zk-master_scale": rust_scale,
                       "zk-master_scale_herd_free": herd_free_scale,
                       "kazoo": kazoo,
                       "kazoo_scale": kazoo_scale, "curator": curator, "processes": procs,
                       "goals": goals}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
