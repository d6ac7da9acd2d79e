"""The cluster's processes, for cluster.py: a 3-master Redis Cluster, the
origin, the moongate nodes (one shared conf.d file each links) and the
HAProxy front, all on 127.0.0.1. Every child is spawned here, kept in
CHILDREN and stopped by its PID (stop_all); PR_SET_PDEATHSIG kills them if
the script dies first."""

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
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
timeout = "{redis_timeout}"

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
