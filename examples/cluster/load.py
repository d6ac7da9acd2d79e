"""The load side of cluster.py: a small HTTP/1.1 client over asyncio, the
offered-load runner, /metrics reading, and the four measurements (a-d)."""

import asyncio
import json
import os
import re

from topology import BURST, CACHE, RATE, ZONE, owner_of

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
        """A new connection, and which node it goes to ("front": haproxy's
        choice)."""
        if self.haproxy_port:
            return await Conn.open(self.haproxy_port), "front"
        for _ in range(len(self.nodes)):
            node = self.nodes[self.turn % len(self.nodes)]
            self.turn += 1
            try:
                return await Conn.open(node.port), node.name
            except OSError:
                continue
        raise ConnectionError("no node accepts connections")


async def offer(front, key, rate, duration, lanes=16, during=None):
    """Offers `rate` r/s of GET /api/ with `x-tenant: key` for `duration` s
    over `lanes` keep-alive connections. Returns [(t, status | None, node)]
    (None: the request failed; node: where it went, "front" through
    haproxy), t in seconds since the start. `during`, if given,
    is a coroutine run alongside (it gets the start time)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    total = int(rate * duration)
    nxt = iter(range(total))
    results = []

    async def lane():
        conn, via = None, None
        for i in nxt:
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            t = loop.time() - t0
            try:
                if conn is None:
                    conn, via = await front.connect()
                status, _, _ = await conn.request("GET", f"/api/{i}", {"x-tenant": key})
                results.append((t, status, via))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    ConnectionError, ValueError, IndexError):
                results.append((t, None, via))
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
    for t, s, _ in results:
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
    ok = sum(1 for _, s, _ in res if s == 200)
    limited = sum(1 for _, s, _ in res if s == 429)
    failed = sum(1 for _, s, _ in res if s not in (200, 429))
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

async def measure_master_loss(nodes, redis, phase):
    """Load on two tenants: one whose bucket lives on the master that is
    killed, one on a surviving master; `phase` s before the kill, with the
    master down, and after its restart. Sent to the nodes directly, in
    turn (not through the front, whose per-connection balance may leave a
    node without one tenant): every node takes for both."""
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
        offer(Front(None, nodes), down_key, RATE * 3, 3 * phase, lanes=15, during=script),
        offer(Front(None, nodes), live_key, RATE * 3 // 2, 3 * phase, lanes=6),
    )
    after = [await metrics(n) for n in nodes]
    down_res, live_res = both

    def rate(res, lo, hi, node=None):
        n = sum(1 for t, s, via in res
                if s == 200 and lo <= t < hi and node in (None, via))
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
        "key_on_killed_master_allowed_rps_by_node_while_down": {
            n.name: rate(down_res, k + 1, marks["restart"], n.name) for n in nodes},
        "key_on_live_master_allowed_rps_by_node_while_down": {
            n.name: rate(live_res, k + 1, marks["restart"], n.name) for n in nodes},
        "key_on_killed_master_allowed_per_second": per_second(down_res),
        "purge_while_down": purge_down,
        "failed_requests": sum(1 for _, s, _ in down_res + live_res if s not in (200, 429)),
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
    failures = [t for t, s, _ in res if s is None or s not in (200, 429)]
    after = [(t, s) for t, s, _ in res if t >= k + 1]
    span = (after[-1][0] - after[0][0]) if len(after) > 1 else 0
    return {
        "killed_node": victim.name,
        "killed_at_s": round(k, 2),
        "requests": len(res),
        "failed": len(failures),
        "last_failure_after_kill_s": round(max(failures) - k, 3) if failures else None,
        "allowed_rps_after_kill": round(sum(1 for _, s in after if s == 200) / span, 1)
        if span else None,
        "other_statuses": sorted({s for _, s, _ in res if s not in (200, 429, None)}),
    }
