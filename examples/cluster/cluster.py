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
off by more than 5 % or a purge did not reach every node.
"""

import argparse
import asyncio
import ctypes
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ZONE = "per_tenant"
RATE = 100  # r/s, the zone's rate
BURST = 50
CACHE = "pages"

# --------------------------------------------------------------------------
# Processes: every child is kept here and stopped by its PID on exit.

CHILDREN = []  # (name, Popen)


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: SIGKILL the child when this process dies, even
    # by SIGKILL (then the finally below never runs).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def spawn(name, args, log_path, env=None):
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=_die_with_parent,
    )
    log.close()
    CHILDREN.append((name, proc))
    return proc


def stop(proc, sig=signal.SIGTERM, wait=5.0):
    """Stops one child by its PID: `sig`, then SIGKILL after `wait` s."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


def stop_all():
    for _, proc in reversed(CHILDREN):
        stop(proc)
    CHILDREN.clear()


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------
# Ports

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindable(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cluster_ports(n):
    """n ports P below Linux's ephemeral range whose bus port P+10000 is
    free too (Redis Cluster listens on both)."""
    out = []
    for _ in range(5000):
        p = random.randrange(10000, 22000)
        if p not in out and bindable(p) and bindable(p + 10000):
            out.append(p)
            if len(out) == n:
                return out
    sys.exit("no free loopback ports for the Redis Cluster")


def wait_until(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout} s")


# --------------------------------------------------------------------------
# The origin behind the cached route (run as a child: `--origin PORT`).

class OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Head and body go out in one write, and at once: no Nagle wait
        # behind the reader's delayed ACK (40 ms) in a MISS's latency.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        body = f"page {self.path}\n".encode()
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                f"Cache-Control: max-age=300\r\nContent-Length: {len(body)}\r\n\r\n")
        self.wfile.write(head.encode() + body)

    def log_message(self, *args):
        pass


def run_origin(port):
    ThreadingHTTPServer(("127.0.0.1", port), OriginHandler).serve_forever()


# --------------------------------------------------------------------------
# Redis Cluster

class RedisNode:
    def __init__(self, port, dir_):
        self.port, self.dir, self.proc = port, dir_, None

    def start(self):
        self.launch()
        wait_until(f"redis-server on {self.port}", lambda: self.cli("PING") == "PONG", 10)

    def launch(self):
        """Starts the server (on the calling thread: the child's death
        signal follows the thread that started it)."""
        os.makedirs(self.dir, exist_ok=True)
        self.proc = spawn(
            f"redis-{self.port}",
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--save", "", "--appendonly", "no",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "2000",
             # A master down leaves the others serving their own slots.
             "--cluster-require-full-coverage", "no"],
            os.path.join(self.dir, "redis.log"),
        )

    def kill(self):
        self.proc.kill()  # SIGKILL, by PID
        self.proc.wait()

    def cli(self, *args):
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True, text=True, timeout=10,
        )
        return out.stdout.strip()


def start_redis_cluster(tmp):
    nodes = [RedisNode(p, os.path.join(tmp, f"redis-{p}")) for p in cluster_ports(3)]
    for n in nodes:
        n.start()
    out = subprocess.run(
        ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
         "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True, text=True, timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed:\n{out.stdout}{out.stderr}")
    wait_until("cluster_state:ok on every node",
               lambda: all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in nodes), 30)
    return nodes


def owner_of(nodes, key):
    """The master that owns `key`'s slot."""
    slot = int(nodes[0].cli("CLUSTER", "KEYSLOT", key))
    for line in nodes[0].cli("CLUSTER", "NODES").splitlines():
        fields = line.split()
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        for r in fields[8:]:
            lo, _, hi = r.partition("-")
            if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                return next(n for n in nodes if n.port == port)
    raise RuntimeError(f"no master owns slot {slot}")


# --------------------------------------------------------------------------
# moongate nodes: one shared conf.d file, linked into each node's conf.d
# beside the node's own listeners.

SHARED = """# Shared by every node: each node's conf.d links this file.
[redis]
cluster = [{seeds}]
timeout = "100ms"

[limit.{zone}]
rate = "{rate}/s"
burst = {burst}
key = "$http_x_tenant"
scope = "redis"
on_redis_error = "local"

[upstream.origin]
servers = [{{ addr = "127.0.0.1:{origin}" }}]

[cache.{cache}]
memory = "16MiB"
key = "$request_uri"

[[route]]
path = "/api/"
limit = "{zone}"
lua.content_inline = 'ngx.say("ok")'

[[route]]
path = "/pages/"
upstream = "origin"
cache = "{cache}"
"""

NODE = """# This node's own listeners.
[server]
listen = ["127.0.0.1:{port}"]
workers = {workers}
access_log = "off"

[admin]
listen = "127.0.0.1:{admin}"
"""


class Node:
    def __init__(self, name, binary, prefix, shared, workers):
        self.name, self.binary = name, binary
        self.port, self.admin = free_port(), free_port()
        self.conf = os.path.join(prefix, name, "conf.d")
        os.makedirs(self.conf)
        os.symlink(shared, os.path.join(self.conf, "10-cluster.toml"))
        with open(os.path.join(self.conf, "00-node.toml"), "w") as f:
            f.write(NODE.format(port=self.port, admin=self.admin, workers=workers))
        self.log = os.path.join(prefix, name, "moongate.log")
        self.proc = None

    def start(self):
        env = dict(os.environ, RUST_LOG="info")
        self.proc = spawn(self.name, [self.binary, "run", "-c", self.conf], self.log, env)

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_log(self, needle, timeout):
        def seen():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_text()[-3000:]}")
            return needle in self.log_text()
        wait_until(f"{self.name}: log line {needle!r}", seen, timeout)


# --------------------------------------------------------------------------
# A small HTTP/1.1 client over asyncio streams (keep-alive, Content-Length
# and chunked bodies): enough for this load and nothing more.

class Conn:
    def __init__(self, reader, writer):
        self.r, self.w = reader, writer

    @classmethod
    async def open(cls, port, timeout=2.0):
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        return cls(r, w)

    def close(self):
        self.w.close()

    async def request(self, method, path, headers=None, timeout=5.0):
        return await asyncio.wait_for(self._request(method, path, headers or {}), timeout)

    async def _request(self, method, path, headers):
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.w.write((head + "\r\n").encode())
        await self.w.drain()
        line = await self.r.readline()
        if not line:
            raise ConnectionError("closed before a response")
        status = int(line.split()[1])
        got = {}
        while True:
            line = await self.r.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            got[k.strip().lower()] = v.strip()
        if "content-length" in got:
            body = await self.r.readexactly(int(got["content-length"]))
        elif got.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.r.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await self.r.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += (await self.r.readexactly(size + 2))[:-2]
        else:
            body = b""
        return status, got, body


async def http(port, method, path):
    c = await Conn.open(port)
    try:
        return await c.request(method, path, {"Connection": "close"})
    finally:
        c.close()


async def metrics(node):
    """The node's /metrics as {(name, frozenset(labels)): value}."""
    _, _, body = await http(node.admin, "GET", "/metrics")
    out = {}
    for line in body.decode().splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? ([0-9.e+-]+|NaN)$", line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(ms, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in ms.items() if n == name and want <= ls)


class Front:
    """Where the load client connects: the HAProxy front, or (without
    haproxy) the nodes in turn, skipping a node that refuses."""

    def __init__(self, haproxy_port, nodes):
        self.haproxy_port, self.nodes, self.turn = haproxy_port, nodes, 0

    async def connect(self):
        if self.haproxy_port:
            return await Conn.open(self.haproxy_port)
        for _ in range(len(self.nodes)):
            node = self.nodes[self.turn % len(self.nodes)]
            self.turn += 1
            try:
                return await Conn.open(node.port)
            except OSError:
                continue
        raise ConnectionError("no node accepts connections")


async def offer(front, key, rate, duration, lanes=16, during=None):
    """Offers `rate` r/s of GET /api/ with `x-tenant: key` for `duration` s
    over `lanes` keep-alive connections. Returns [(t, status | None)] (None:
    the request failed), t in seconds since the start. `during`, if given,
    is a coroutine run alongside (it gets the start time)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    total = int(rate * duration)
    nxt = iter(range(total))
    results = []

    async def lane():
        conn = None
        for i in nxt:
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            t = loop.time() - t0
            try:
                if conn is None:
                    conn = await front.connect()
                status, _, _ = await conn.request("GET", f"/api/{i}", {"x-tenant": key})
                results.append((t, status))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    ConnectionError, ValueError, IndexError):
                results.append((t, None))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    tasks = [asyncio.create_task(lane()) for _ in range(lanes)]
    side = asyncio.create_task(during(t0)) if during else None
    await asyncio.gather(*tasks)
    if side:
        await side
    results.sort()
    return results


def per_second(results, status=200):
    out = {}
    for t, s in results:
        out.setdefault(int(t), 0)
        if s == status:
            out[int(t)] += 1
    return [out[k] for k in sorted(out)]


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


# --------------------------------------------------------------------------
# a. the limit across the nodes

async def warm_up(nodes):
    """A few takes on every node first: each worker's Redis Cluster
    connection is made on its first take (slot map, one connection per
    master), which is not what the limit run measures."""
    for n in nodes:
        c = await Conn.open(n.port)
        try:
            for i in range(5):
                await c.request("GET", "/api/warm-up", {"x-tenant": f"warm-up-{i}"})
        finally:
            c.close()


async def measure_limit(front, nodes, duration, over):
    key = f"tenant-a-{os.getpid()}"
    await warm_up(nodes)
    before = [await metrics(n) for n in nodes]
    res = await offer(front, key, RATE * over, duration)
    after = [await metrics(n) for n in nodes]
    ok = sum(1 for _, s in res if s == 200)
    limited = sum(1 for _, s in res if s == 429)
    failed = sum(1 for _, s in res if s not in (200, 429))
    span = res[-1][0] - res[0][0]
    expected = BURST + RATE * span
    by_node = [metric(a, "moongate_limit_requests_total", zone=ZONE, result="allowed")
               - metric(b, "moongate_limit_requests_total", zone=ZONE, result="allowed")
               for a, b in zip(after, before)]
    fallbacks = sum(metric(a, "moongate_limit_redis_fallbacks_total", zone=ZONE)
                    - metric(b, "moongate_limit_redis_fallbacks_total", zone=ZONE)
                    for a, b in zip(after, before))
    return {
        "offered_rps": round(len(res) / span, 1) if span else 0,
        "seconds": round(span, 2),
        "requests": len(res),
        "allowed": ok,
        "limited": limited,
        "failed": failed,
        "expected": round(expected, 1),
        "error_pct": round(100 * (ok - expected) / expected, 2),
        "allowed_by_node": [int(x) for x in by_node],
        "fallbacks": int(fallbacks),
    }


# --------------------------------------------------------------------------
# b. purge fan-out

async def cache_status(conn, path):
    status, headers, _ = await conn.request("GET", path)
    if status != 200:
        raise RuntimeError(f"GET {path}: {status}")
    return headers.get("x-cache-status", "")


async def one_purge(a, others, conns, path, timeout=5.0):
    """Purges `path` on node `a`; returns (its fanout answer, ms until it
    answered, [ms until each other node answered MISS, or None])."""
    loop = asyncio.get_running_loop()
    for node in others:
        for _ in range(50):
            if await cache_status(conns[node.name], path) == "HIT":
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError(f"{node.name}: {path} never a HIT")
    t0 = loop.time()
    _, _, body = await http(a.admin, "DELETE", f"/cache/{CACHE}?key={path}")
    answered = (loop.time() - t0) * 1000
    answer = json.loads(body)

    async def until_miss(node):
        while loop.time() - t0 < timeout:
            if await cache_status(conns[node.name], path) == "MISS":
                return (loop.time() - t0) * 1000
        return None

    times = await asyncio.gather(*(until_miss(n) for n in others))
    return answer.get("fanout"), answered, list(times)


async def measure_purges(nodes, count):
    a, others = nodes[0], nodes[1:]
    conns = {n.name: await Conn.open(n.port) for n in nodes}
    latencies, missed, fanout, answered = [], 0, {}, []
    try:
        for i in range(count):
            path = f"/pages/{os.getpid()}-{i}"
            answer, took, times = await one_purge(a, others, conns, path)
            answered.append(took)
            fanout[answer] = fanout.get(answer, 0) + 1
            for t in times:
                if t is None:
                    missed += 1
                else:
                    latencies.append(t)
    finally:
        for c in conns.values():
            c.close()
    out = {"purges": count, "reached": len(latencies), "missed": missed, "fanout": fanout}
    if latencies:
        out.update({
            "p50_ms": round(pct(latencies, 50), 2),
            "p99_ms": round(pct(latencies, 99), 2),
            "max_ms": round(max(latencies), 2),
            "admin_answer_p50_ms": round(pct(answered, 50), 2),
        })
    return out


# --------------------------------------------------------------------------
# c. a Redis master killed, then restarted

async def measure_master_loss(front, nodes, redis, phase):
    """Load on two tenants: one whose bucket lives on the master that is
    killed, one on a surviving master; `phase` s before the kill, with the
    master down, and after its restart."""
    pid = os.getpid()
    down_key = next(f"tenant-c{i}-{pid}" for i in range(1000)
                    if owner_of(redis, f"mg:{{{ZONE}:tenant-c{i}-{pid}}}") is redis[0])
    live_key = next(f"tenant-l{i}-{pid}" for i in range(1000)
                    if owner_of(redis, f"mg:{{{ZONE}:tenant-l{i}-{pid}}}") is not redis[0])
    victim = redis[0]
    marks, purge_down = {}, {}
    ups = []  # (t, [redis_up per node])
    logs_before = [n.log_text().count("redis unreachable") for n in nodes]

    async def script(t0):
        loop = asyncio.get_running_loop()
        end = t0 + 3 * phase

        async def poll():
            while loop.time() < end:
                row = []
                for n in nodes:
                    row.append(int(metric(await metrics(n), "moongate_limit_redis_up", zone=ZONE)))
                ups.append((loop.time() - t0, row))
                await asyncio.sleep(0.2)

        poller = asyncio.create_task(poll())
        await asyncio.sleep(max(0, t0 + phase - loop.time()))
        marks["kill"] = loop.time() - t0
        await loop.run_in_executor(None, victim.kill)
        # A purge while the master is down (it was the first seed: the
        # one every node publishes and subscribes through).
        await asyncio.sleep(max(0, t0 + 1.5 * phase - loop.time()))
        path = f"/pages/{os.getpid()}-while-down"
        conns = {n.name: await Conn.open(n.port) for n in nodes}
        try:
            answer, _, times = await one_purge(nodes[0], nodes[1:], conns, path)
            purge_down.update({"fanout": answer, "miss_after_ms": [
                round(t, 1) if t is not None else None for t in times]})
        finally:
            for c in conns.values():
                c.close()
        await asyncio.sleep(max(0, t0 + 2 * phase - loop.time()))
        marks["restart"] = loop.time() - t0
        victim.launch()
        while await loop.run_in_executor(None, victim.cli, "PING") != "PONG":
            await asyncio.sleep(0.05)
        marks["restarted"] = loop.time() - t0
        await poller

    before = [await metrics(n) for n in nodes]
    both = await asyncio.gather(
        offer(front, down_key, RATE * 3, 3 * phase, during=script),
        offer(front, live_key, RATE * 3 // 2, 3 * phase, lanes=8),
    )
    after = [await metrics(n) for n in nodes]
    down_res, live_res = both

    def rate(res, lo, hi):
        n = sum(1 for t, s in res if s == 200 and lo <= t < hi)
        return round(n / (hi - lo), 1)

    k, r = marks["kill"], marks["restarted"]
    end = 3 * phase
    # Recovery: the first poll after the restart from which every node says
    # redis_up 1 to the end.
    recovered = None
    for t, row in ups:
        if t < r:
            continue
        if all(row):
            recovered = t if recovered is None else recovered
        else:
            recovered = None
    logs_after = [n.log_text() for n in nodes]

    def after_recovery(res):
        # From half a second after every node is back on Redis to the end.
        if recovered is None or end - (recovered + 0.5) < 1:
            return None
        return rate(res, recovered + 0.5, end)

    return {
        "killed_master_port": victim.port,
        "seconds_per_phase": phase,
        "killed_at_s": round(k, 2),
        "restarted_at_s": round(r, 2),
        "key_on_killed_master_allowed_rps": {
            "before": rate(down_res, 1, k), "down": rate(down_res, k + 1, marks["restart"]),
            "after_recovery": after_recovery(down_res)},
        "key_on_live_master_allowed_rps": {
            "before": rate(live_res, 1, k), "down": rate(live_res, k + 1, marks["restart"]),
            "after_recovery": after_recovery(live_res)},
        "key_on_killed_master_allowed_per_second": per_second(down_res),
        "purge_while_down": purge_down,
        "failed_requests": sum(1 for _, s in down_res + live_res if s not in (200, 429)),
        "fallbacks": int(sum(metric(a, "moongate_limit_redis_fallbacks_total", zone=ZONE)
                             - metric(b, "moongate_limit_redis_fallbacks_total", zone=ZONE)
                             for a, b in zip(after, before))),
        "share_of_polls_redis_up_0_while_down": round(
            sum(1 for t, row in ups if k < t < marks["restart"] for u in row if not u)
            / max(1, sum(len(row) for t, row in ups if k < t < marks["restart"])), 2),
        "redis_up_on_every_node_after_restart_s":
            round(recovered - r, 2) if recovered is not None else None,
        "unreachable_logged": [t.count("redis unreachable") - b
                               for t, b in zip(logs_after, logs_before)],
        "back_on_redis_logged": [("back on redis" in t) for t in logs_after],
    }


# --------------------------------------------------------------------------
# d. a moongate node killed

async def measure_node_loss(front, nodes, duration):
    key = f"tenant-d-{os.getpid()}"
    victim = nodes[-1]
    marks = {}

    async def script(t0):
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0, t0 + duration / 3 - loop.time()))
        marks["kill"] = loop.time() - t0
        victim.proc.kill()  # SIGKILL, by PID
        victim.proc.wait()

    res = await offer(front, key, RATE * 3, duration, during=script)
    k = marks["kill"]
    failures = [t for t, s in res if s is None or s not in (200, 429)]
    after = [(t, s) for t, s in res if t >= k + 1]
    span = (after[-1][0] - after[0][0]) if len(after) > 1 else 0
    return {
        "killed_node": victim.name,
        "killed_at_s": round(k, 2),
        "requests": len(res),
        "failed": len(failures),
        "last_failure_after_kill_s": round(max(failures) - k, 3) if failures else None,
        "allowed_rps_after_kill": round(sum(1 for _, s in after if s == 200) / span, 1)
        if span else None,
        "other_statuses": sorted({s for _, s in res if s not in (200, 429, None)}),
    }


# --------------------------------------------------------------------------

HAPROXY = """global
    maxconn 1024
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
frontend front
    bind 127.0.0.1:{port}
    default_backend moongate
backend moongate
    balance roundrobin
{servers}
"""


def start_haproxy(tmp, nodes):
    port = free_port()
    servers = "\n".join(
        f"    server {n.name} 127.0.0.1:{n.port} check inter 200ms fall 2 rise 2"
        for n in nodes)
    path = os.path.join(tmp, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(HAPROXY.format(port=port, servers=servers))
    check = subprocess.run(["haproxy", "-c", "-f", path], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy -c: {check.stdout}{check.stderr}")
    proc = spawn("haproxy", ["haproxy", "-db", "-f", path], os.path.join(tmp, "haproxy.log"))

    def accepting():
        if proc.poll() is not None:
            raise RuntimeError("haproxy exited; see haproxy.log")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until("haproxy", accepting, 10)
    return port


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
            zone=ZONE, rate=RATE, burst=BURST, origin=origin_port, cache=CACHE))
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
        c = await measure_master_loss(front, nodes, redis, args.phase)
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
