"""The blog post's election script, as users run it today (kazoo), for interop tests.

Creates /Roles/workers if missing, registers worker<seq> with data "1", and on every change of
the group sorts the children: the first is master. It keeps the original's log lines, and its
defects too (it never resigns on exit: its node stays until the session expires).

usage: original_worker.py HOST:PORT [SESSION_TIMEOUT_S]
"""

import logging
import sys
import time

from kazoo.client import KazooClient

logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
log = logging.getLogger("original")

zk = KazooClient(hosts=sys.argv[1], timeout=float(sys.argv[2]) if len(sys.argv) > 2 else 10.0)
zk.start()
zk.ensure_path("/Roles/workers")
me = zk.create("/Roles/workers/worker", b"1", ephemeral=True, sequence=True).rsplit("/", 1)[1]
log.info("register ok! I'm %s", me)
sys.stdout.flush()


def check(children):
    workers = sorted(children)
    if workers and workers[0] == me:
        log.info("I've become master!")
    else:
        log.info("%s is masters, I'm slave", workers[:1])
    sys.stdout.flush()


zk.ChildrenWatch("/Roles/workers", check)
for _ in range(600):  # bounded: ten minutes at most
    time.sleep(1)
