// Curator's LeaderLatch measured the way examples/bench and scripts/bench_kazoo.py measure
// zk-master and kazoo, for scripts/bench (which compiles this file with javac against Debian's
// libcurator jars and runs it). Not part of the Rust package's build.
//
//   java -cp "$CP" CuratorBench bench HOST:PORT ROUNDS JSON_FILE
//       join (new client + latch in an empty group -> isLeader), graceful takeover (A's latch and
//       client closed -> B's isLeader), the floor (checkExists round trip on a connected client),
//       hasLeadership() cost; one JSON object to JSON_FILE, a summary to stdout.
//   java -cp "$CP" CuratorBench worker HOST:PORT GROUP SESSION_MS
//       the example worker's behaviour: prints "I've become master!" / "... I'm slave" on each
//       change; on SIGTERM (shutdown hook) closes its latch and session so the next takes over.
//
// Every wait is bounded (LIMIT_MS); a round that exceeds it fails the run.

import java.io.FileWriter;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.leader.LeaderLatchListener;
import org.apache.curator.retry.RetryNTimes;

public final class CuratorBench {
    static final int SESSION_MS = 4000;
    static final long LIMIT_MS = 15000;
    static final int WARMUP = 10;

    public static void main(String[] args) throws Exception {
        if (args.length == 4 && args[0].equals("bench")) {
            bench(args[1], Integer.parseInt(args[2]), args[3]);
        } else if (args.length == 4 && args[0].equals("worker")) {
            worker(args[1], args[2], Integer.parseInt(args[3]));
        } else {
            System.err.println("usage: CuratorBench bench HOST:PORT ROUNDS JSON_FILE | "
                    + "worker HOST:PORT GROUP SESSION_MS");
            System.exit(2);
        }
    }

    static CuratorFramework client(String connect, int sessionMs) throws InterruptedException {
        CuratorFramework c = CuratorFrameworkFactory.builder().connectString(connect)
                .sessionTimeoutMs(sessionMs).connectionTimeoutMs((int) LIMIT_MS)
                .retryPolicy(new RetryNTimes(3, 100)).build();
        c.start();
        if (!c.blockUntilConnected((int) LIMIT_MS, TimeUnit.MILLISECONDS)) {
            throw new IllegalStateException("no session with " + connect);
        }
        return c;
    }

    /** A latch whose isLeader() stamps System.nanoTime() into `ledAt`. */
    static LeaderLatch latch(CuratorFramework c, String path, String id, AtomicLong ledAt,
            CountDownLatch leads) {
        LeaderLatch l = new LeaderLatch(c, path, id);
        l.addListener(new LeaderLatchListener() {
            @Override public void isLeader() {
                ledAt.compareAndSet(0, System.nanoTime());
                leads.countDown();
            }
            @Override public void notLeader() {}
        });
        return l;
    }

    static void bench(String connect, int rounds, String jsonFile) throws Exception {
        String base = "/bench-curator/" + ProcessHandle.current().pid();
        List<Double> joins = new ArrayList<>(), takeovers = new ArrayList<>(), floor = new ArrayList<>();
        for (int i = 0; i < rounds; i++) {
            String path = base + "/join" + i;
            long start = System.nanoTime();
            AtomicLong led = new AtomicLong();
            CountDownLatch leads = new CountDownLatch(1);
            CuratorFramework c = client(connect, SESSION_MS);
            LeaderLatch l = latch(c, path, "a", led, leads);
            l.start();
            if (!leads.await(LIMIT_MS, TimeUnit.MILLISECONDS)) throw new IllegalStateException("join");
            if (i >= WARMUP) joins.add((led.get() - start) / 1e6);
            l.close();
            c.close();
        }
        for (int i = 0; i < rounds; i++) {
            String path = base + "/takeover" + i;
            CuratorFramework a = client(connect, SESSION_MS), b = client(connect, SESSION_MS);
            AtomicLong aLed = new AtomicLong(), bLed = new AtomicLong();
            CountDownLatch aLeads = new CountDownLatch(1), bLeads = new CountDownLatch(1);
            LeaderLatch la = latch(a, path, "a", aLed, aLeads), lb = latch(b, path, "b", bLed, bLeads);
            la.start();
            if (!aLeads.await(LIMIT_MS, TimeUnit.MILLISECONDS)) throw new IllegalStateException("A");
            lb.start();
            long deadline = System.currentTimeMillis() + LIMIT_MS;
            while (a.getChildren().forPath(path).size() < 2) {
                if (System.currentTimeMillis() > deadline) throw new IllegalStateException("B joins");
                Thread.sleep(1);
            }
            Thread.sleep(50); // let B set its watch, as the other benches settle
            if (lb.hasLeadership()) throw new IllegalStateException("B leads while A does");
            long start = System.nanoTime();
            la.close();
            a.close(); // the session goes too, as zk-master's resign() and kazoo's stop() do
            if (!bLeads.await(LIMIT_MS, TimeUnit.MILLISECONDS)) throw new IllegalStateException("B");
            if (i >= WARMUP) takeovers.add((bLed.get() - start) / 1e6);
            lb.close();
            b.close();
        }
        CuratorFramework c = client(connect, SESSION_MS);
        c.create().creatingParentsIfNeeded().forPath(base + "/floor");
        for (int i = 0; i < rounds * 5 + WARMUP; i++) {
            long start = System.nanoTime();
            c.checkExists().forPath(base + "/floor");
            if (i >= WARMUP) floor.add((System.nanoTime() - start) / 1e6);
        }
        // hasLeadership(): a leader's latch, 10M calls per run after a JIT warm-up run.
        AtomicLong led = new AtomicLong();
        CountDownLatch leads = new CountDownLatch(1);
        LeaderLatch l = latch(c, base + "/is-master", "m", led, leads);
        l.start();
        if (!leads.await(LIMIT_MS, TimeUnit.MILLISECONDS)) throw new IllegalStateException("leader");
        List<Double> ns = new ArrayList<>();
        long sink = 0;
        for (int run = 0; run < 6; run++) {
            long start = System.nanoTime();
            for (int k = 0; k < 10_000_000; k++) if (l.hasLeadership()) sink++;
            if (run > 0) ns.add((System.nanoTime() - start) / 1e7);
        }
        l.close();
        c.close();
        String json = String.format(Locale.ROOT,
                "{\"impl\": \"curator\", \"join_ms\": %s, \"takeover_ms\": %s, "
                        + "\"floor_ms\": %s, \"is_master_ns\": %.2f, \"sink\": %d}\n",
                summary(joins),
                summary(takeovers), summary(floor), median(ns), sink);
        try (FileWriter w = new FileWriter(jsonFile)) {
            w.write(json);
        }
        System.out.print("curator: " + json);
    }

    static double median(List<Double> v) {
        List<Double> s = new ArrayList<>(v);
        Collections.sort(s);
        int n = s.size();
        return n % 2 == 1 ? s.get(n / 2) : (s.get(n / 2 - 1) + s.get(n / 2)) / 2;
    }

    static String summary(List<Double> v) {
        List<Double> s = new ArrayList<>(v);
        Collections.sort(s);
        int n = s.size();
        double p90 = s.get((n * 9 + 9) / 10 - 1); // nearest rank
        return String.format(Locale.ROOT,
                "{\"n\": %d, \"median\": %.4f, \"p90\": %.4f, \"min\": %.4f, \"max\": %.4f}",
                n, median(v), p90, s.get(0), s.get(n - 1));
    }

    static void worker(String connect, String group, int sessionMs) throws Exception {
        CuratorFramework c = client(connect, sessionMs);
        LeaderLatch l = new LeaderLatch(c, group);
        l.addListener(new LeaderLatchListener() {
            @Override public void isLeader() {
                System.out.println("I've become master!");
                System.out.flush();
            }
            @Override public void notLeader() {
                System.out.println("I'm slave");
                System.out.flush();
            }
        });
        CountDownLatch stop = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                l.close();
            } catch (IOException e) {
                System.err.println("close: " + e);
            }
            c.close();
            stop.countDown();
        }));
        l.start();
        System.out.println("register ok!");
        System.out.flush();
        stop.await(600, TimeUnit.SECONDS); // bounded: ten minutes at most
    }
}
