#!/usr/bin/env python3
"""Three moongate nodes on a 3-master Redis Cluster behind an L4 front, and a
load run that measures what SPEC §9 promises (see README.md here):

  a. a `scope = "redis"` limit of 100 r/s held across the nodes under 3x
     over-demand;
  b. purge fan-out latency: a purge on node A, until nodes B and C answer MISS;
  c. one Redis master killed and restarted: fallback and recovery;
  d. one moongate node killed: the others carry on behind the front.

Everything runs on 127.0.0.1, in a temp dir, and every process started here
is stopped by its PID on exit (and killed by the kernel if this script dies
first: PR_SET_PDEATHSIG). Python 3 standard library only; needs Debian's
redis-server, redis-tools and haproxy (without haproxy the load client
round-robins over the nodes itself).

    python3 examples/cluster/cluster.py --moongate target/release/moongate
    python3 examples/cluster/cluster.py --quick     # a and b, a few seconds

Prints the figures, then one line `RESULT {json}`; exits 1 when the limit is
off by more than 5 % or a purge did not reach every node. The processes are
in topology.py, the client and the measurements in load.py.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile

# The sibling modules are imported from the repository: leave no __pycache__.
sys.dont_write_bytecode = True

from load import Front, measure_limit, measure_master_loss, measure_node_loss, measure_purges
from topology import (BURST, CACHE, RATE, ZONE, SHARED, Node, free_port, on_signal,
                      run_origin, spawn, start_haproxy, start_redis_cluster, stop_all)


def default_binary():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "target")
    return os.path.join(target, "release", "moongate")


async def run(args, tmp):
    for tool, pkg in [("redis-server", "redis-server"), ("redis-cli", "redis-tools")]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (Debian: apt-get install {pkg})")
    haproxy = shutil.which("haproxy") is not None and not args.no_haproxy
    if args.require_haproxy and not haproxy:
        sys.exit("haproxy is not installed (Debian: apt-get install haproxy)")
    binary = os.path.abspath(args.moongate)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no moongate binary at {binary}: cargo build --release, or --moongate PATH")

    origin_port = free_port()
    spawn("origin", [sys.executable, os.path.abspath(__file__), "--origin", str(origin_port)],
          os.path.join(tmp, "origin.log"))
    redis = start_redis_cluster(tmp)
    shared = os.path.join(tmp, "shared", "10-cluster.toml")
    os.makedirs(os.path.dirname(shared))
    with open(shared, "w") as f:
        f.write(SHARED.format(
            seeds=", ".join(f'"redis://127.0.0.1:{r.port}"' for r in redis),
            zone=ZONE, rate=RATE, burst=BURST, origin=origin_port, cache=CACHE,
            redis_timeout=args.redis_timeout))
    nodes = [Node(n, binary, tmp, shared, args.workers) for n in ("A", "B", "C")]
    for n in nodes:
        n.start()
    for n in nodes:
        n.wait_log("moongate ready", 30)
        n.wait_log("purge fan-out: subscribed", 30)
    front_port = start_haproxy(tmp, nodes) if haproxy else None
    front = Front(front_port, nodes)
    print(f"# {len(redis)} Redis masters on {[r.port for r in redis]}, moongate nodes "
          f"{[(n.name, n.port, n.admin) for n in nodes]}, front: "
          + (f"haproxy on {front_port}" if haproxy else "round-robin in this client"),
          flush=True)

    result = {"front": "haproxy" if haproxy else "client round-robin",
              "moongate": binary, "workers_per_node": args.workers}
    a = b = None
    if "a" in args.parts:
        a = await measure_limit(front, nodes, args.duration, 3)
        result["limit"] = a
        print(f"a. limit {RATE} r/s (burst {BURST}) offered {a['offered_rps']} r/s for "
          f"{a['seconds']} s through the front: allowed {a['allowed']} "
          f"(expected {a['expected']}: burst + rate x time), error {a['error_pct']:+} %, "
          f"by node {a['allowed_by_node']}, limited {a['limited']}, failed {a['failed']}, "
              f"fallbacks {a['fallbacks']}", flush=True)

    if "b" in args.parts:
        b = await measure_purges(nodes, args.purges)
        result["purge"] = b
        print(f"b. {b['purges']} purges on node A: reached B and C {b['reached']} times "
              f"(missed {b['missed']}), MISS after p50 {b.get('p50_ms')} ms, "
              f"p99 {b.get('p99_ms')} ms, max {b.get('max_ms')} ms (node A's admin answered "
              f"after p50 {b.get('admin_answer_p50_ms')} ms); fanout {b['fanout']}",
              flush=True)

    if "c" in args.parts:
        c = await measure_master_loss(nodes, redis, args.phase)
        result["redis_master_killed"] = c
        print("c. Redis master killed and restarted:\n" + json.dumps(c, indent=2), flush=True)
    if "d" in args.parts:
        d = await measure_node_loss(front, nodes, args.duration)
        result["moongate_node_killed"] = d
        print("d. moongate node killed:\n" + json.dumps(d, indent=2), flush=True)

    print("RESULT " + json.dumps(result), flush=True)
    if args.hold:
        print("# holding: everything keeps running until Ctrl-C", flush=True)
        await asyncio.Event().wait()
    bad = []
    if a and abs(a["error_pct"]) > 5:
        bad.append(f"limit off by {a['error_pct']} %")
    if a and a["failed"]:
        bad.append(f"{a['failed']} requests failed under the limit run")
    if b and b["missed"]:
        bad.append(f"{b['missed']} purges did not reach a node")
    if bad:
        print("FAILED: " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--moongate", default=default_binary(), help="the moongate binary")
    p.add_argument("--quick", action="store_true",
                   help="a and b only, short (for CI): 4 s of load, 10 purges")
    p.add_argument("--parts", default="abcd", help="which measurements to run (default abcd)")
    p.add_argument("--duration", type=float, default=20, help="seconds of load for a and d")
    p.add_argument("--phase", type=float, default=8,
                   help="c: seconds before the kill, while down, after the restart")
    p.add_argument("--purges", type=int, default=100)
    p.add_argument("--workers", type=int, default=1, help="worker threads per node")
    p.add_argument("--redis-timeout", default="100ms",
                   help="[redis] timeout: past it a take falls back (CI, loaded: longer)")
    p.add_argument("--no-haproxy", action="store_true",
                   help="round-robin in the client even if haproxy is installed")
    p.add_argument("--require-haproxy", action="store_true",
                   help="fail when haproxy is not installed")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, confs)")
    p.add_argument("--hold", action="store_true",
                   help="after the measurements, keep everything running until Ctrl-C")
    p.add_argument("--origin", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.origin:
        run_origin(args.origin)
        return 0
    if args.quick:
        args.parts = "ab"
        args.duration, args.purges = min(args.duration, 4), min(args.purges, 10)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tmp = tempfile.mkdtemp(prefix="moongate-cluster-")
    try:
        return asyncio.run(run(args, tmp))
    finally:
        stop_all()
        if args.keep:
            print(f"# kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
