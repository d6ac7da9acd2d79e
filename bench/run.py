#!/usr/bin/env python3
"""moongate vs nginx, side by side, in one run (SPEC §11).

    python3 bench/run.py [--scenarios proxy,proxy-tls] [--rounds 5] [--duration 5]
                         [--connections 50] [--threads 1] [--check]
                         [--moongate target/release/moongate] [--out bench/out]

One origin nginx (bench/nginx/origin.conf) serves every scenario.  For each
scenario an nginx (bench/nginx/<scenario>.conf, 1 worker) and a moongate
(bench/moongate/<scenario>.toml as its conf.d, workers = 1) proxy to it; wrk
measures them alternately (nginx, moongate, nginx, moongate, ...).  For every
run: requests/sec, p50/p99 latency, errors, requests per CPU-second of the
server's process tree (utime+stime from /proc), and user and system CPU
microseconds per request.  --connections 50,256 runs every scenario at each
concurrency.  Standard library only.

    python3 bench/run.py --instructions [--scenarios proxy,lua-access] [--rounds 3] [--duration 5]

measures instead moongate alone under valgrind's callgrind: user-space
instructions per request, a figure that barely moves on a noisy machine.

    python3 bench/run.py --idle-connections [N]      (bench/modes.py)
    python3 bench/run.py --syscalls [--scenarios proxy,proxy-api]
    python3 bench/run.py --allocations [--alloc-sites] [--scenarios proxy,proxy-api,lua-access,cache-hot]

measure instead each server's memory per idle keep-alive client connection,
its syscalls per request under strace, and moongate's heap allocations per
request (a --features alloc-count build, which run.py builds with LTO off
unless --moongate names one; --alloc-sites adds, per allocation site, the
allocations per request under valgrind's DHAT).

See bench/README.md.  To add a scenario: a template in bench/nginx/, one in
bench/moongate/, and an entry in SCENARIOS below.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import gzip
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 5.0          # SIGTERM, then SIGKILL after this long
WARMUP_S = 1
SERVERS = ("nginx", "moongate")  # A, B: the order of every round

INSTALL_HINT = "apt-get install -y nginx wrk openssl"
REDIS_HINT = "apt-get install -y redis-server"
# The Lua scenarios' nginx side: Debian's ngx_lua (+ NDK, which it needs) and resty.core.
LUA_FILES = ("/usr/lib/nginx/modules/ndk_http_module.so",
             "/usr/lib/nginx/modules/ngx_http_lua_module.so",
             "/usr/share/lua/5.1/resty/core.lua",
             "/usr/share/lua/5.1/resty/lrucache.lua")
LUA_INSTALL_HINT = "apt-get install -y libnginx-mod-http-lua lua-resty-core lua-resty-lrucache"


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------

@dataclass
class Probe:
    """An extra request the check sends to both servers; only the status is
    compared (error pages differ between the two servers)."""
    what: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    expect_status: int = 403


@dataclass
class Scenario:
    """One side-by-side comparison.

    nginx     template in bench/nginx/ (@LISTEN@, @ORIGIN@, @CERT@, @KEY@, + vars)
    moongate  template in bench/moongate/, rendered to <conf.d>/00-bench.toml
              (@LISTEN@, @ORIGIN@, @WORKERS@, @KEEPALIVE@, @CERT@, @KEY@, + vars)
    path, headers, wrk_script   what wrk sends (wrk_script: a Lua file in bench/wrk/, wrk -s)
    tls       serve HTTPS (run.py makes a self-signed cert)
    vars      extra @NAME@ substitutions for both templates (e.g. RL_RATE)
    files     files written into the scenario's run directory (@RUN_DIR@) before
              the servers start: {name: content}
    expect_headers  response headers both servers must send on the check requests
    probes    more check requests (e.g. without a token: 403 from both)
    needs, needs_hint  files the nginx side needs, and the command that installs them
    baseline  a scenario whose req/CPU-s this one is compared with, when both ran
              (lua-access vs proxy: the cost of the Lua handler)
    redis     run.py starts a redis-server on a free loopback port for the scenario
              (@REDIS_URL@ in the templates) and stops it by PID afterwards
    warm_headers  response headers both servers must send on every check request but the
              first (which may be a cache MISS): X-Cache-Status: HIT.  With warm_headers the
              check sends at least two requests to each server, also without --check
    slow_origin  run.py starts nginx/origin-slow.conf (nginx + ngx_lua, ngx.sleep(@DELAY_S@)
              then proxy to the fast origin) for the scenario, and @ORIGIN@ points at it
    uwsgi_app  run.py starts a uWSGI app (UWSGI_APP: WSGI, /hello answers the origin's 100 B
              body) with UWSGI_PROCESSES processes on a free loopback port (@UWSGI@), and
              stops it by PID afterwards; both servers reach it, so its CPU is nobody's
    grpc_app  run.py starts GRPC_PROCESSES gRPC echo servers (bench/grpc/echo.js, Node's
              http2: echo.Echo/Unary answers its request), each on a free loopback port,
              and stops them by PID afterwards; the templates get the list as
              @GRPC_NGINX_SERVERS@ (`server HOST:PORT;` for each, on one line) and @GRPC_MOONGATE_SERVERS@
              (`{ addr = "HOST:PORT" }, ...`). Their CPU is nobody's
    body      the request body h2load POSTs (h2load -d; h2 scenarios only), e.g. a
              gRPC-framed message (grpc_frame)

    A var's value may contain @RUN_DIR@ (replaced by the scenario's run directory), e.g.
    CACHE_DIR = "@RUN_DIR@/nginx-cache".
    """
    name: str
    summary: str
    nginx: str
    moongate: str
    path: str = "/hello"
    headers: dict[str, str] = field(default_factory=dict)
    tls: bool = False
    wrk_script: str | None = None
    vars: dict[str, str] = field(default_factory=dict)
    expect_status: int = 200
    files: dict[str, str] = field(default_factory=dict)
    expect_headers: dict[str, str] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)
    needs: tuple[str, ...] = ()
    needs_hint: str = ""
    baseline: str | None = None
    redis: bool = False
    warm_headers: dict[str, str] = field(default_factory=dict)
    slow_origin: bool = False
    uwsgi_app: bool = False
    h2: bool = False
    grpc_app: bool = False
    body: bytes | None = None


# The uWSGI app of the "uwsgi" scenario: the origin's /hello (the same 100 bytes), as WSGI.
UWSGI_APP = '''\
BODY = b"hello from bench-origin: this body is exactly 100 bytes ...........................................\\n"


def application(environ, start_response):
    if environ.get("PATH_INFO") != "/hello":
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
'''
UWSGI_PROCESSES = 2                       # the app's worker processes (its CPU is nobody's)
UWSGI_HINT = "apt-get install -y uwsgi-core uwsgi-plugin-python3"



def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: flag 0 (not compressed), the length
    as 4 bytes big-endian, the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


# The "grpc" scenario's request: one 100-byte message to echo.Echo/Unary,
# answered with the same bytes (as /hello's 100-byte body in the HTTP scenarios).
GRPC_MESSAGE = b"hello from bench: a gRPC unary request, its message is exactly 100 bytes ..........................\n"
assert len(GRPC_MESSAGE) == 100
GRPC_HEADERS = {"content-type": "application/grpc", "te": "trailers"}
GRPC_PROCESSES = 2                        # the echo servers (Node, one thread each)
GRPC_HINT = "apt-get install -y nodejs nghttp2-client"

BENCH_TOKEN = "bench-token-alice"   # -> user "alice", in both servers' token tables
# the two caches' directories, one per server, in the scenario's run directory
CACHE_VARS = {"CACHE_DIR": "@RUN_DIR@/nginx-cache", "MG_CACHE_DIR": "@RUN_DIR@/moongate-cache"}


# The proxy-gzip scenario's compression, the same on both sides: gzip at
# level 6 (zlib's default), these types, 1024 bytes at least.
GZIP_TYPES = ("text/html text/plain text/css text/xml text/javascript application/javascript "
              "application/json application/xml image/svg+xml")
GZIP_VARS = {
    "GZIP_LEVEL": "6",
    "GZIP_MIN_LENGTH": "1024",
    "GZIP_TYPES_NGINX": " ".join(t for t in GZIP_TYPES.split() if t != "text/html"),
    "GZIP_TYPES_MOONGATE": ", ".join(f'"{t}"' for t in GZIP_TYPES.split()),
}


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario(
        name="proxy",
        summary="plain reverse proxy to a keep-alive upstream pool (64 per nginx worker), GET /hello "
                "(100 B body); moongate counts for /metrics (an admin listener, metrics = true)",
        nginx="proxy.conf",
        moongate="proxy.toml",
        vars={"METRICS": "true"},
    ),
    Scenario(
        name="proxy-nometrics",
        summary="the proxy scenario with moongate's metrics off ([admin] metrics = false): "
                "what counting for /metrics costs, against proxy",
        nginx="proxy.conf",
        moongate="proxy.toml",
        vars={"METRICS": "false"},
        baseline="proxy",
    ),
    Scenario(
        name="proxy-tls",
        summary="the proxy scenario behind TLS (HTTP/1.1 over TLS, self-signed cert)",
        nginx="proxy-tls.conf",
        moongate="proxy-tls.toml",
        tls=True,
    ),
    Scenario(
        name="proxy-h2c",
        summary="the proxy scenario with HTTP/2 clients: h2load, h2c with prior knowledge, "
                "10 streams per connection (-m 10; --connections / 10 connections, so as many "
                "requests in flight as wrk), GET /hello; upstreams stay HTTP/1.1",
        nginx="proxy-h2c.conf",
        moongate="proxy.toml",
        vars={"METRICS": "true"},
        h2=True,
        needs=("/usr/bin/h2load",),
        needs_hint="apt-get install -y nghttp2-client",
    ),
    Scenario(
        name="proxy-gzip",
        summary="the proxy scenario compressing a 10 KB HTML page with gzip on the way out: "
                "nginx `gzip on` vs moongate `compress = {...}`, level 6, the same types and "
                "min length; GET /page with Accept-Encoding: gzip",
        nginx="proxy-gzip.conf",
        moongate="proxy-gzip.toml",
        path="/page",
        headers={"Accept-Encoding": "gzip"},
        vars=GZIP_VARS,
        expect_headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
        baseline="proxy-page",
    ),
    Scenario(
        name="proxy-page",
        summary="proxy-gzip without compression (the client asks for none): its baseline",
        nginx="proxy-gzip.conf",
        moongate="proxy-gzip.toml",
        path="/page",
        vars=GZIP_VARS,
    ),
    Scenario(
        name="proxy-api",
        summary="the proxy scenario with lua-access's response: GET /api/item/1 (~1 KB JSON) with "
                "X-User sent by the client, no Lua (the like-for-like baseline of lua-access)",
        nginx="proxy.conf",
        moongate="proxy.toml",
        path="/api/item/1",
        headers={"X-User": "alice"},
        expect_headers={"X-Origin-User": "alice"},
    ),
    Scenario(
        name="lua-access",
        summary="the proxy plus a Lua access handler: bearer token from a Lua table (403 otherwise), "
                "/v1/* -> /api/* rewrite, X-User request header; GET /v1/item/1 (~1 KB JSON)",
        nginx="lua-access.conf",
        moongate="lua-access.toml",
        path="/v1/item/1",
        headers={"Authorization": f"Bearer {BENCH_TOKEN}"},
        # moongate's [lua] init; nginx has the same table in its init_by_lua_block
        files={"tokens.lua": 'package.loaded.bench_tokens = { ["bench-token-alice"] = "alice", '
                             '["bench-token-bob"] = "bob", ["bench-token-carol"] = "carol" }\n'},
        # the origin echoes X-User as X-Origin-User
        expect_headers={"X-Origin-User": "alice"},
        probes=[Probe("no token", "/v1/item/1", {}, 403),
                Probe("unknown token", "/v1/item/1", {"Authorization": "Bearer nope"}, 403)],
        needs=LUA_FILES,
        needs_hint=LUA_INSTALL_HINT,
        baseline="proxy-api",
    ),
    Scenario(
        name="cache-hot",
        summary="proxy cache, one URL: GET /api/item/1 (~1 KB JSON, the origin sends "
                "Cache-Control: max-age=60); after warm-up every request is a HIT on both "
                "(nginx proxy_cache + proxy_cache_lock; moongate [cache.bench] memory 256MiB + disk, "
                "lock = true)",
        nginx="cache.conf",
        moongate="cache.toml",
        path="/api/item/1",
        vars=CACHE_VARS,
        warm_headers={"X-Cache-Status": "HIT"},
    ),
    Scenario(
        name="cache-1000",
        summary="proxy cache, 1000 URLs: GET /api/item/1 ... /api/item/1000 round-robin "
                "(bench/wrk/cache-1000.lua); all HITs after warm-up, on 1000 keys",
        nginx="cache.conf",
        moongate="cache.toml",
        path="/api/item/1",
        wrk_script="cache-1000.lua",
        vars=CACHE_VARS,
        warm_headers={"X-Cache-Status": "HIT"},
    ),
    Scenario(
        name="uwsgi",
        summary="a WSGI app under uWSGI (2 processes) reached over the uwsgi protocol: nginx's "
                "uwsgi_pass (uwsgi_params) vs moongate's protocol = \"uwsgi\"; GET /hello (100 B body), "
                "a new upstream connection per request on both sides",
        nginx="uwsgi.conf",
        moongate="uwsgi.toml",
        uwsgi_app=True,
        needs=("/usr/bin/uwsgi", "/usr/lib/uwsgi/plugins/python3_plugin.so", "/etc/nginx/uwsgi_params"),
        needs_hint=UWSGI_HINT,
    ),
    Scenario(
        name="grpc",
        summary="gRPC unary calls over h2c (h2load, -m 10 streams per connection on "
                "--connections / 10 connections): POST /echo.Echo/Unary, one 100-byte message "
                "echoed, grpc-status in trailers; nginx's grpc_pass (keepalive 64) vs moongate's "
                f"protocol = \"grpc\", to the same {GRPC_PROCESSES} echo servers "
                "(bench/grpc/echo.js, Node http2)",
        nginx="grpc.conf",
        moongate="grpc.toml",
        path="/echo.Echo/Unary",
        headers=GRPC_HEADERS,
        h2=True,
        grpc_app=True,
        body=grpc_frame(GRPC_MESSAGE),
        needs=("/usr/bin/h2load", "/usr/bin/nghttp"),
        needs_hint=GRPC_HINT,
    ),
    Scenario(
        name="proxy-slow",
        summary="the plain proxy in front of a slow origin (every answer 20 ms late; "
                "nginx/origin-slow.conf), GET /api/item/1 ... /1000: what cache-slow is compared with",
        nginx="proxy.conf",
        moongate="proxy.toml",
        path="/api/item/1",
        wrk_script="cache-1000.lua",
        vars={"DELAY_S": "0.02"},
        needs=LUA_FILES,
        needs_hint=LUA_INSTALL_HINT,
        slow_origin=True,
    ),
    Scenario(
        name="cache-slow",
        summary="cache-1000 in front of the slow origin (20 ms per answer): the cache's effect, "
                "read next to proxy-slow",
        nginx="cache.conf",
        moongate="cache.toml",
        path="/api/item/1",
        wrk_script="cache-1000.lua",
        vars={**CACHE_VARS, "DELAY_S": "0.02"},
        warm_headers={"X-Cache-Status": "HIT"},
        needs=LUA_FILES,
        needs_hint=LUA_INSTALL_HINT,
        slow_origin=True,
    ),
]}
# The proxy-jwt-* scenarios: a token per run, signed here (HS256 with the
# stdlib, RS256 with the openssl CLI over a key made for the run), valid for
# a day; moongate's `jwt` policy verifies it on every request.
JWT_HS256_SECRET = "bench-only-hs256-secret-0123456789abcdef"   # not a secret: bench traffic only


def _b64url(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_material(alg: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """A signed token for alg (HS256 or RS256), the templates' JWT_* vars, and the files
    (the RS256 public key) the scenario writes into its run directory."""
    import hmac
    import hashlib
    header = _b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = {"iss": "bench", "sub": "alice", "exp": int(time.time()) + 86400}
    signing_input = f"{header}.{_b64url(json.dumps(claims).encode())}".encode()
    if alg == "HS256":
        sig = hmac.new(JWT_HS256_SECRET.encode(), signing_input, hashlib.sha256).digest()
        return (f"{signing_input.decode()}.{_b64url(sig)}",
                {"JWT_ALG": alg, "JWT_KEY": f'secret = "{JWT_HS256_SECRET}"'}, {})
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "key.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", str(key)], check=True, capture_output=True)
        public = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"], check=True,
                                capture_output=True).stdout.decode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=signing_input,
                             check=True, capture_output=True).stdout
    return (f"{signing_input.decode()}.{_b64url(sig)}",
            {"JWT_ALG": alg, "JWT_KEY": 'public_key_file = "@RUN_DIR@/jwt-rs256.pem"'},
            {"jwt-rs256.pem": public})


def with_jwt(sc: Scenario) -> Scenario:
    """sc with its token, key and vars made, when it is a proxy-jwt-* scenario."""
    alg = {"proxy-jwt-hs256": "HS256", "proxy-jwt-rs256": "RS256"}.get(sc.name)
    if alg is None:
        return sc
    token, jwt_vars, files = jwt_material(alg)
    return replace(sc, headers={"Authorization": f"Bearer {token}"}, vars={**sc.vars, **jwt_vars},
                   files={**sc.files, **files})


for _alg in ("hs256", "rs256"):
    SCENARIOS[f"proxy-jwt-{_alg}"] = Scenario(
        name=f"proxy-jwt-{_alg}",
        summary=f"the proxy scenario with moongate's `jwt` policy verifying a {_alg.upper()} bearer "
                "token on every request (iss checked, sub sent upstream as X-User); nginx runs plain "
                "proxy.conf (Debian's nginx cannot verify a JWT): read moongate against the proxy "
                "baseline, the cost of verification",
        nginx="proxy.conf",
        moongate="proxy-jwt.toml",
        vars={"METRICS": "true"},
        baseline="proxy",
    )

SCENARIOS["lua-ratelimit"] = replace(
    SCENARIOS["lua-access"],
    name="lua-ratelimit",
    summary="lua-access plus a token bucket per API token, checked on every request but set "
            "high enough (1e6/s, burst 1e6) never to throttle: nginx's bucket on ngx.shared.DICT "
            "(anchor) against a moongate [limit.NAME] zone keyed by the token",
    nginx="lua-ratelimit.conf",
    moongate="lua-ratelimit.toml",
    vars={"RL_RATE": "1000000", "RL_BURST": "1000000"},
    baseline="lua-access",
)
SCENARIOS["lua-ratelimit-redis"] = replace(
    SCENARIOS["lua-ratelimit"],
    name="lua-ratelimit-redis",
    summary="lua-ratelimit with the moongate zone in scope = \"redis\" (one GCRA script per request "
            "on a local redis-server, shared by every node); nginx keeps its local ngx.shared.DICT "
            "bucket (ngx_lua has no cluster-wide equivalent in Debian)",
    moongate="lua-ratelimit-redis.toml",
    baseline="lua-ratelimit",
    redis=True,
)
SCENARIOS["cache-expiry"] = replace(
    SCENARIOS["cache-slow"],
    name="cache-expiry",
    summary="no stampede at expiry: one hot URL fresh for 1 s only (the origin sends "
            "Cache-Control: max-age=1 for /short/*), behind the slow origin (20 ms per answer); "
            "run with --connections 256. moongate's lock also covers an entry that expires under "
            "load (one origin request per expiry); nginx's proxy_cache_lock does not (anchor "
            "README: without proxy_cache_use_stale updating every waiting request goes). "
            "Read origin requests and p99",
    path="/short/item/1",
    wrk_script=None,
)
DEFAULT_SCENARIOS = "proxy,proxy-tls"


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def log(msg: str = "") -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def which(tool: str) -> str | None:
    # nginx lives in /usr/sbin, which is not on a normal user's PATH on Debian.
    return shutil.which(tool) or shutil.which(
        tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


TEMPLATE_VAR = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def page_10k() -> str:
    """The origin's /page: about 10 KB of HTML, as compressible as a real page
    (repeated markup, varying numbers); a file the origin serves."""
    rows, i = [], 0
    head = "<!doctype html><html><head><title>bench page</title></head><body><table>\n"
    tail_ = "</table></body></html>\n"
    while len(head) + sum(map(len, rows)) + len(tail_) < 10_240:
        rows.append(f"<tr><td class=id>{i}</td><td class=name>widget-{i:04d}</td>"
                    f"<td class=price>{(i * 37) % 1000 / 10:.2f}</td><td>in stock</td></tr>\n")
        i += 1
    return head + "".join(rows) + tail_


def render(template: Path, dest: Path, values: dict[str, str]) -> None:
    text = template.read_text()
    missing = sorted({m for m in TEMPLATE_VAR.findall(text) if m not in values})
    if missing:
        raise BenchError(f"{template}: no value for {', '.join('@%s@' % m for m in missing)}")
    text = TEMPLATE_VAR.sub(lambda m: str(values[m.group(1)]), text)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)


def tail(path: Path, lines: int = 30) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    | " + line for line in data[-lines:]) or "    | (empty)"


def cmd_output(argv: list[str], timeout: float = 5, ok_codes=(0,)) -> str:
    """stdout+stderr of a short command ("" if it fails; nginx -v and wrk -v
    print to stderr, and wrk -v exits 1)."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (p.stdout + p.stderr).strip() if p.returncode in ok_codes else ""


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# /proc: process trees, CPU time, memory
# --------------------------------------------------------------------------

def proc_stat(pid: int) -> dict | None:
    """Fields of /proc/PID/stat we need; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parens: split after the last ')'.
    rest = data[data.rindex(b")") + 2:].split()
    # rest[i] is field i+3 of proc(5): 3 state, 4 ppid, 14 utime, 15 stime,
    # 16 cutime, 17 cstime, 22 starttime.  For a thread group leader these
    # already add up every thread (live and exited) of the process.
    return {
        "state": rest[0].decode(),
        "ppid": int(rest[1]),
        "ticks": int(rest[11]) + int(rest[12]),
        "child_ticks": int(rest[13]) + int(rest[14]),
        "user_ticks": int(rest[11]) + int(rest[13]),     # utime + cutime
        "sys_ticks": int(rest[12]) + int(rest[14]),      # stime + cstime
        "start": int(rest[19]),
    }


def children_map() -> dict[int, list[int]]:
    """ppid -> [pid] over every process (threads' children have ppid = the tgid)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                kids.setdefault(st["ppid"], []).append(int(name))
    return kids


def process_tree(root: int) -> list[int]:
    """root and all its descendants (breadth first)."""
    kids = children_map()
    tree, seen, i = [root], {root}, 0
    while i < len(tree):                      # bounded: each pid enters once
        for c in kids.get(tree[i], ()):
            if c not in seen:
                seen.add(c)
                tree.append(c)
        i += 1
    return tree


def tree_cpu_ticks(pids: list[int]) -> int:
    """utime+stime of a process tree, plus cutime+cstime (descendants that exited
    and were reaped inside the tree move there), in clock ticks."""
    total = 0
    for pid in pids:
        st = proc_stat(pid)
        if st is not None:
            total += st["ticks"] + st["child_ticks"]
    return total


def tree_cpu_split(pids: list[int]) -> tuple[int, int]:
    """tree_cpu_ticks() kept apart: (user, system) clock ticks of a process tree,
    utime + cutime and stime + cstime."""
    user = system = 0
    for pid in pids:
        st = proc_stat(pid)
        if st is not None:
            user += st["user_ticks"]
            system += st["sys_ticks"]
    return user, system


def _status_kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_memory_kb(pids: list[int]) -> dict:
    """VmRSS summed over a process tree (what the anchors README quotes), plus
    PSS (shared pages split between the processes) and the per-process RSS."""
    rss, pss, per = 0, 0, []
    for pid in pids:
        r = _status_kb(f"/proc/{pid}/status", "VmRSS")
        rss += r
        pss += _status_kb(f"/proc/{pid}/smaps_rollup", "Pss")
        per.append({"pid": pid, "rss_kb": r})
    return {"rss_kb": rss, "pss_kb": pss, "processes": per}


# --------------------------------------------------------------------------
# Server processes: started with a handle, stopped by PID, never left behind
# --------------------------------------------------------------------------

try:  # parent-death signal: servers get SIGTERM even if run.py is SIGKILLed
    import ctypes
    _LIBC = ctypes.CDLL(None, use_errno=True)
except (OSError, ImportError):
    _LIBC = None


def _child_setup() -> None:
    if _LIBC is not None:
        try:
            _LIBC.prctl(1, int(signal.SIGTERM), 0, 0, 0)   # PR_SET_PDEATHSIG
        except Exception:
            pass


_LIVE: list["Server"] = []


class StartError(BenchError):
    pass


class Server:
    def __init__(self, label: str, argv: list[str], cwd: Path, log_path: Path,
                 port: int, tls: bool, ready_text: str | None = None):
        self.label, self.argv, self.cwd, self.log_path = label, argv, cwd, log_path
        self.port, self.tls, self.ready_text = port, tls, ready_text
        self.grace = STOP_GRACE_S              # SIGTERM, then SIGKILL after this long
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.seen: set[tuple[int, int]] = set()   # (pid, start time) of descendants seen so far

    def tree(self) -> list[int]:
        """The process tree (root first); remembers the descendants, so that
        stop() can find them even if the root dies and they are re-parented."""
        pids = process_tree(self.pid)
        for pid in pids[1:]:
            st = proc_stat(pid)
            if st is not None:
                self.seen.add((pid, st["start"]))
        return pids

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}{path}"

    def start(self, timeout: float) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_child_setup)
        _LIVE.append(self)
        deadline = time.monotonic() + timeout
        while True:                            # bounded by the deadline
            rc = self.proc.poll()
            if rc is not None:
                raise StartError(f"{self.label} exited with status {rc} while starting "
                                 f"({shlex.join(self.argv)}); log {self.log_path}:\n"
                                 f"{tail(self.log_path)}")
            if self.ready_text and self.ready_text in self.log_path.read_text(errors="replace"):
                break
            if port_open(self.port):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise StartError(f"{self.label} did not listen on {HOST}:{self.port} within "
                                 f"{timeout:.0f}s; log {self.log_path}:\n{tail(self.log_path)}")
            time.sleep(0.05)
        # the ready line can come a moment before accept() works
        for _ in range(100):
            if port_open(self.port):
                self.tree()
                return
            time.sleep(0.05)
        raise StartError(f"{self.label} printed it was ready but {HOST}:{self.port} refuses "
                         f"connections; log {self.log_path}:\n{tail(self.log_path)}")

    def stop(self) -> None:
        """SIGTERM to the PID, SIGKILL after self.grace; then any descendant
        that outlived it (same pid *and* start time, so never a reused pid)."""
        if self.proc is None:
            return
        proc = self.proc
        if proc.poll() is None:
            self.tree()
        descendants = sorted(self.seen)
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                warn(f"  {self.label} (pid {proc.pid}) ignored SIGTERM for {self.grace:.0f}s: SIGKILL")
                proc.kill()
                proc.wait(5)
        for _ in range(50):                    # up to ~2.5 s for children to follow
            alive = [(p, s) for p, s in descendants if _alive(p, s)]
            if not alive:
                break
            time.sleep(0.05)
        for pid, start in descendants:
            if _alive(pid, start):
                warn(f"  {self.label}: descendant pid {pid} outlived its parent: SIGKILL")
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self._log:
            self._log.close()
        if self in _LIVE:
            _LIVE.remove(self)


def _alive(pid: int, start: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st["start"] == start and st["state"] not in ("Z", "X")


def stop_all() -> None:
    if not _LIVE:
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        for server in reversed(list(_LIVE)):
            try:
                server.stop()
            except Exception as e:             # keep stopping the others
                warn(f"  could not stop {server.label}: {e}")
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)            # unwinds through the finally blocks


# --------------------------------------------------------------------------
# HTTP checks (urllib, no proxies from the environment: loopback only)
# --------------------------------------------------------------------------

_TLS_CTX = ssl.create_default_context()
_TLS_CTX.check_hostname = False
_TLS_CTX.verify_mode = ssl.CERT_NONE
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                      urllib.request.HTTPSHandler(context=_TLS_CTX))


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def origin_counters(port: int) -> dict | None:
    """nginx stub_status of the origin: connections accepted, requests served."""
    try:
        _, body, _ = http_get(f"http://{HOST}:{port}/__stats", timeout=2)
        m = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", body)
        if m:
            return {"accepts": int(m.group(1)), "requests": int(m.group(3))}
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(text: str) -> dict:
    out: dict = {"requests": None, "rps": None, "p50_ms": None, "p75_ms": None,
                 "p90_ms": None, "p99_ms": None, "avg_ms": None, "max_ms": None,
                 "non2xx": 0, "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["wrk_seconds"] = _ms(m.group(2), m.group(3)) / 1000
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m|h)", text, re.M)
    if m:
        out["avg_ms"], out["max_ms"] = _ms(m.group(1), m.group(2)), _ms(m.group(3), m.group(4))
    dist = text.split("Latency Distribution", 1)
    if len(dist) == 2:
        for pct, val, unit in re.findall(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)", dist[1], re.M):
            out[f"p{pct}_ms"] = _ms(val, unit)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    return out


def wrk_argv(args, sc: Scenario, url: str, duration: float,
             threads: int | None = None, connections: int | None = None) -> list[str]:
    """wrk's command line for sc (-t/-c from args unless given)."""
    argv = [which("wrk") or "wrk", f"-t{threads or args.threads}",
            f"-c{connections or args.connections}", f"-d{duration}s", "--latency"]
    for k, v in sc.headers.items():
        argv += ["-H", f"{k}: {v}"]
    if sc.wrk_script:
        argv += ["-s", str(BENCH_DIR / "wrk" / sc.wrk_script)]
    return argv + [url]


H2_STREAMS = 10   # h2load -m: concurrent streams per HTTP/2 connection


# Request bodies of h2 scenarios (Scenario.body), each written once to a file
# in the run directory (Run sets _BODY_DIR) for h2load -d and nghttp -d.
_BODY_DIR: list[Path] = []
_BODY_FILES: dict[bytes, Path] = {}


def body_file(body: bytes) -> Path:
    """The file holding body, in the run directory (written on first use)."""
    path = _BODY_FILES.get(body)
    if path is None:
        if not _BODY_DIR:
            raise BenchError("no run directory for request bodies")
        path = _BODY_DIR[0] / f"body-{len(_BODY_FILES) + 1}.bin"
        path.write_bytes(body)
        os.chmod(path, 0o644)
        _BODY_FILES[body] = path
    return path


def h2_request_args(sc: Scenario) -> list[str]:
    """h2load's (and nghttp's) options for sc's request: its headers, and its
    body (-d FILE: the request becomes a POST) if it has one."""
    argv = []
    for k, v in sc.headers.items():
        argv += ["-H", f"{k}: {v}"]
    if sc.body is not None:
        argv += ["-d", str(body_file(sc.body))]
    return argv


def method(sc: Scenario) -> str:
    """The load's request method: POST with a body (h2load -d), else GET."""
    return "GET" if sc.body is None else "POST"


def h2load_argv(args, sc: Scenario, url: str, duration: float,
                threads: int | None = None, connections: int | None = None) -> list[str]:
    """h2load's command line for an h2 scenario (h2c with prior knowledge): as
    many requests in flight as wrk would have (--connections), H2_STREAMS per
    connection."""
    conns = max(1, (connections or args.connections) // H2_STREAMS)
    argv = [which("h2load") or "h2load", f"-t{threads or args.threads}",
            f"-c{conns}", f"-m{H2_STREAMS}", f"-D{duration}"]
    return argv + h2_request_args(sc) + [url]


def parse_h2load(text: str) -> dict:
    """parse_wrk's keys from h2load's output; h2load reports no percentiles,
    so the p* fields stay None (mean and max latency are kept)."""
    out: dict = {"requests": None, "rps": None, "p50_ms": None, "p75_ms": None,
                 "p90_ms": None, "p99_ms": None, "avg_ms": None, "max_ms": None,
                 "non2xx": 0, "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}}
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req/s", text)
    if m:
        out["wrk_seconds"] = _ms(m.group(1), m.group(2)) / 1000
        out["rps"] = float(m.group(3))
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    if m:
        done, ok, failed, errored, timeout = map(int, m.groups())
        out["requests"] = ok
        out["socket_errors"] = {"connect": 0, "read": errored, "write": failed, "timeout": timeout}
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out["non2xx"] = int(m.group(3)) + int(m.group(4))
    m = re.search(r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)",
                  text, re.M)
    if m:
        out["max_ms"] = _ms(m.group(3), m.group(4))
        out["avg_ms"] = _ms(m.group(5), m.group(6))
    return out


def run_wrk(argv: list[str], duration: float) -> tuple[str, int]:
    """wrk's output (stdout+stderr) and exit status; -1 if it overran duration + 30 s."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=duration + 30, preexec_fn=_child_setup)
        return p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        return f"wrk timed out: {e}", -1


def wrk_problems(r: dict, rc: int) -> list[str]:
    """Why a wrk run (parse_wrk's r, exit status rc) is not a clean result:
    wrk failed, nothing completed, non-2xx/3xx responses, socket errors."""
    problems = []
    if rc != 0:
        problems.append(f"wrk exit status {rc}")
    if not r["requests"]:
        problems.append("no requests completed")
    if r["non2xx"]:
        problems.append(f"{r['non2xx']} non-2xx/3xx responses")
    if any(r["socket_errors"].values()):
        problems.append("socket errors " + ", ".join(f"{k} {v}" for k, v in r["socket_errors"].items()))
    return problems


def upstream_conns(pids: list[int], ports: set[int]) -> int:
    """TCP connections that these processes hold open (ESTABLISHED) to these
    loopback ports: their sockets' inodes, looked up in /proc/net/tcp and tcp6."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if (len(f) > 9 and f[3] == "01" and f[9] in inodes
                    and int(f[2].rsplit(":", 1)[1], 16) in ports):
                n += 1
    return n


def measure(args, sc: Scenario, server: Server, origin_port: int, origin_pid: int,
            duration: float, helpers: tuple["Server", ...] = (),
            upstream_ports: set[int] = frozenset()) -> dict:
    """One wrk run against server. The CPU of `helpers` (a redis-server only
    this server uses) counts as the server's: that work is part of its answer.
    upstream_ports: the gRPC echo servers' (grpc_app): the server's connections
    to them still open after the run are counted."""
    make_argv = h2load_argv if sc.h2 else wrk_argv
    argv = make_argv(args, sc, server.url(sc.path), duration)
    o0 = origin_counters(origin_port)
    oc0 = tree_cpu_ticks(process_tree(origin_pid))
    helper_pids = [pid for h in helpers for pid in h.tree()]
    h0 = tree_cpu_split(helper_pids)
    u0, s0 = tree_cpu_split(server.tree())
    t0 = time.monotonic()
    text, rc = run_wrk(argv, duration)
    wall = time.monotonic() - t0
    h1 = tree_cpu_split(helper_pids)
    u1, s1 = tree_cpu_split(server.tree())
    oc1 = tree_cpu_ticks(process_tree(origin_pid))
    o1 = origin_counters(origin_port)

    r = parse_h2load(text) if sc.h2 else parse_wrk(text)
    # the helpers' CPU (user and system) is the server's
    user_s = (u1 - u0 + h1[0] - h0[0]) / CLK_TCK
    sys_s = (s1 - s0 + h1[1] - h0[1]) / CLK_TCK
    cpu_s = user_s + sys_s
    n = r["requests"]
    r.update({
        "server": server.label,
        "connections": args.connections,
        "wrk_exit": rc,
        "wall_s": round(wall, 3),
        "cpu_s": cpu_s,
        "user_cpu_s": user_s,
        "sys_cpu_s": sys_s,
        "cpu_cores": cpu_s / r["wrk_seconds"] if r.get("wrk_seconds") else None,
        "rpcs": (n / cpu_s) if n and cpu_s > 0 else None,
        "user_us": user_s * 1e6 / n if n else None,
        "sys_us": sys_s * 1e6 / n if n else None,
        "origin_cpu_s": (oc1 - oc0) / CLK_TCK,
        "helper_cpu_s": (sum(h1) - sum(h0)) / CLK_TCK,
    })
    if sc.grpc_app:   # the origin takes no part; the echo servers' connections instead
        r["upstream_conns_open"] = upstream_conns(server.tree(), upstream_ports)
    elif o0 and o1:   # minus this measure()'s own /__stats request and connection
        r["origin_requests"] = o1["requests"] - o0["requests"] - 1
        r["origin_new_conns"] = o1["accepts"] - o0["accepts"] - 1
    problems = wrk_problems(r, rc)
    if r["requests"] and cpu_s <= 0:
        problems.append("no server CPU time measured")
    r["problems"] = problems
    r["flagged"] = bool(problems)
    if problems:
        r["wrk_output"] = text
    return r


# --------------------------------------------------------------------------
# callgrind (--instructions): user-space instructions per request
# --------------------------------------------------------------------------

VALGRIND_HINT = "apt-get install -y valgrind"
INSTR_THREADS, INSTR_CONNECTIONS = 1, 4   # wrk -t1 -c4: keeps a server under valgrind busy
INSTR_WARMUP_S = 3
INSTR_START_TIMEOUT_S = 120.0             # valgrind starts slowly
INSTR_CHECK_TIMEOUT_S = 30.0              # the first requests translate a lot of code
INSTR_STOP_GRACE_S = 30.0                 # callgrind writes its last dump on the way out
CALLGRIND_CONTROL_TIMEOUT_S = 60.0
DUMP_WAIT_S = 60.0
CALLGRIND_TOTAL = re.compile(r"^(totals|summary):\s+(\d+)", re.M)


def callgrind_prefix(out_dir: Path) -> list[str]:
    """What goes in front of a command to run it under callgrind.  valgrind runs
    the program in its own process, so the PID is the program's, and the dumps
    are out_dir/callgrind.out.<pid>.<n> (n = 1, 2, ... one per callgrind_control -d)."""
    return [which("valgrind") or "valgrind", "--tool=callgrind",
            f"--callgrind-out-file={out_dir}/callgrind.out.%p", "--dump-instr=no"]


def callgrind_control(option: str, pid: int) -> None:
    """callgrind_control -z (zero the counters) or -d (dump them) for pid.  It
    returns once callgrind has done it, and exits 0 even when it fails, so its
    "OK." is what counts."""
    argv = [which("callgrind_control") or "callgrind_control", option, str(pid)]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=CALLGRIND_CONTROL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{shlex.join(argv)} did not answer within {CALLGRIND_CONTROL_TIMEOUT_S:.0f}s")
    if p.returncode != 0 or not re.search(r"^\s*OK\.", p.stdout, re.M):
        raise BenchError(f"{shlex.join(argv)} failed (exit {p.returncode}):\n{p.stdout}{p.stderr}")


def callgrind_totals(path: Path) -> dict | None:
    """The totals of a callgrind output file: {"totals": Ir, "summary": Ir}
    (either may be missing), or None while the file is absent or unfinished
    (totals: is the last line callgrind writes)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = {k: int(v) for k, v in CALLGRIND_TOTAL.findall(text)}
    return found if "totals" in found else None


def wait_for_dump(path: Path, timeout: float = DUMP_WAIT_S) -> dict:
    """callgrind_totals(path) once the dump is complete; BenchError after timeout."""
    deadline = time.monotonic() + timeout
    while True:                                # bounded by the deadline
        found = callgrind_totals(path)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise BenchError(f"no complete callgrind dump at {path} after {timeout:.0f}s")
        time.sleep(0.1)


# --------------------------------------------------------------------------
# Summaries and tables
# --------------------------------------------------------------------------

# key, label, better, format
METRICS = [
    ("rpcs", "req/CPU-s", "higher", "int"),
    ("rps", "req/s", "higher", "int"),
    ("p99_ms", "p99 ms", "lower", "ms"),
    ("p50_ms", "p50 ms", "lower", "ms"),
    ("cpu_cores", "server CPU (cores)", None, "f2"),
    ("user_us", "user µs/request", "lower", "us"),
    ("sys_us", "system µs/request", "lower", "us"),
]


def fmt(v, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "int":
        return f"{v:,.0f}".replace(",", " ")
    if kind == "ms":
        return f"{v:.2f}"
    if kind == "mb":
        return f"{v / 1024:.1f}"
    if kind == "us":
        return f"{v:.1f}"
    return f"{v:.2f}"


def spread(values: list, kind: str) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med, kind)
    return f"{fmt(med, kind)} ({fmt(min(vals), kind)}–{fmt(max(vals), kind)})"


def summarize(result: dict) -> dict:
    runs = result["servers"]
    summary: dict = {}
    for key, _, _, _ in METRICS:
        entry = {}
        for srv in SERVERS:
            vals = [r[key] for r in runs[srv]["runs"] if r.get(key) is not None]
            entry[srv] = ({"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
                          if vals else None)
        n, m = entry["nginx"], entry["moongate"]
        entry["ratio"] = (m["median"] / n["median"]) if n and m and n["median"] else None
        paired = []
        for rn, rm in zip(runs["nginx"]["runs"], runs["moongate"]["runs"]):
            if rn.get(key) and rm.get(key) is not None:
                paired.append(rm[key] / rn[key])
        entry["paired"] = ({"median": statistics.median(paired), "min": min(paired), "max": max(paired)}
                           if paired else None)
        summary[key] = entry
    summary["idle_rss_kb"] = {srv: runs[srv].get("idle_memory", {}).get("rss_kb") for srv in SERVERS}
    n_rss, m_rss = summary["idle_rss_kb"]["nginx"], summary["idle_rss_kb"]["moongate"]
    summary["idle_rss_kb"]["ratio"] = (m_rss / n_rss) if n_rss and m_rss else None
    summary["flagged_runs"] = {srv: sum(1 for r in runs[srv]["runs"] if r["flagged"]) for srv in SERVERS}
    return summary


def text_table(sc: Scenario, result: dict, args) -> str:
    runs, s = result["servers"], result["summary"]
    rows = [["metric", "nginx  median (min–max)", "moongate  median (min–max)",
             "moongate/nginx", "per-round ratio (min–max)"]]
    for key, label, better, kind in METRICS:
        e = s[key]
        ratio = f"{e['ratio']:.2f}x" if e["ratio"] else "-"
        if better and e["ratio"]:
            ratio += f" ({better} is better)"
        paired = (f"{e['paired']['median']:.2f}x ({e['paired']['min']:.2f}–{e['paired']['max']:.2f})"
                  if e["paired"] else "-")
        rows.append([label, spread([r.get(key) for r in runs["nginx"]["runs"]], kind),
                     spread([r.get(key) for r in runs["moongate"]["runs"]], kind), ratio, paired])
    rss = s["idle_rss_kb"]
    rows.append(["idle RSS MB (tree)", fmt(rss["nginx"], "mb"), fmt(rss["moongate"], "mb"),
                 f"{rss['ratio']:.2f}x" if rss["ratio"] else "-", ""])
    if sc.grpc_app:   # no origin: the connections to the echo servers right after each run
        rows.append(["upstream conns open (max)"] +
                    [str(max((r.get("upstream_conns_open") or 0 for r in runs[srv]["runs"]), default=0))
                     for srv in SERVERS] + ["", ""])
    else:
        for label, key in (("upstream conns opened", "origin_new_conns"), ("origin requests", "origin_requests")):
            rows.append([label] + [str(sum(r.get(key) or 0 for r in runs[srv]["runs"])) for srv in SERVERS]
                        + ["", ""])
    rows.append(["flagged runs", *(f"{s['flagged_runs'][srv]}/{len(runs[srv]['runs'])}" for srv in SERVERS), "", ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"== {sc.name}: {sc.summary}",
             f"   {method(sc)} {sc.path}  wrk -t{args.threads} -c{result.get('connections', args.connections)} "
             f"-d{args.duration}s, "
             f"{args.rounds} round(s) A B A B (A = nginx {args.nginx_workers} worker(s), "
             f"B = moongate workers={args.moongate_workers})"]
    for i, r in enumerate(rows):
        lines.append("   " + "  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip())
        if i == 0:
            lines.append("   " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def baseline_costs(results: list[dict]) -> list[str]:
    """For each scenario with a baseline that ran in the same run: the extra cost
    per request of what the scenario adds, as 1 - (req/CPU-s ÷ baseline's req/CPU-s)
    of the medians, for each server."""
    done = {r["scenario"]: r for r in results if "summary" in r}
    lines = []
    for name, res in done.items():
        base = SCENARIOS[name].baseline
        if not base or base not in done:
            continue
        parts = []
        for srv in ("moongate", "nginx"):
            a, b = res["summary"]["rpcs"][srv], done[base]["summary"]["rpcs"][srv]
            if a and b and b["median"]:
                parts.append(f"{srv} {1 - a['median'] / b['median']:.1%} "
                             f"(1 - {fmt(a['median'], 'int')} / {fmt(b['median'], 'int')})")
        if parts:
            lines.append(f"{name} cost over {base}, 1 - req/CPU-s ÷ {base}'s req/CPU-s (medians): "
                         + "; ".join(parts))
    return lines


def by_connections(results: list[dict]) -> list[tuple[int | None, list[dict]]]:
    """results grouped by their wrk -c (--connections a,b,...), in run order."""
    groups: dict[int | None, list[dict]] = {}
    for res in results:
        groups.setdefault(res.get("connections"), []).append(res)
    return list(groups.items())


def markdown(results: list[dict], meta: dict, args) -> str:
    """The Markdown block for RESULTS.md: a header (command, date, machine,
    versions), then one table per concurrency, each followed by its baseline costs."""
    conns = ",".join(str(c) for c in args.connections_list)
    out = [f"### {meta['date']} — `{meta['command']}`", "",
           f"Machine: {meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}), "
           f"load {meta['machine']['loadavg_start']} → {meta['machine']['loadavg_end']}, "
           f"kernel {meta['machine']['kernel']}. {meta['versions']['nginx']}, {meta['versions']['wrk']}, "
           f"{meta['versions']['moongate'] or 'moongate ?'} (repo {meta['versions']['git']}). "
           f"wrk -t{args.threads} -c{conns} -d{args.duration}s, {args.rounds} round(s) A B A B; "
           f"median (min–max). user/sys µs/req: the server tree's user and system CPU per request."]
    groups = by_connections(results)
    for c, group in groups:
        out.append("")
        if len(groups) > 1:
            out += [f"**{c} connections** (wrk -c{c})", ""]
        out += markdown_table(group, args)
    return "\n".join(out)


def markdown_table(results: list[dict], args) -> list[str]:
    """One Markdown table (two rows and a ratio row per scenario) and the
    baseline costs, for results taken at one concurrency."""
    out = ["| scenario | server | req/CPU-s | req/s | p99 ms | p50 ms | CPU cores | user µs/req | sys µs/req "
           "| idle RSS MB | flagged |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        if "summary" not in res:
            out.append(f"| {res['scenario']} | (failed: {res.get('error', '?').splitlines()[0]}) |||||||||")
            continue
        runs, s = res["servers"], res["summary"]
        for srv, label in (("nginx", f"nginx ({args.nginx_workers} worker{'s' if args.nginx_workers > 1 else ''})"),
                           ("moongate", f"moongate (workers={args.moongate_workers})")):
            cells = [spread([r.get(k) for r in runs[srv]["runs"]], kind) for k, _, _, kind in METRICS]
            out.append(f"| {res['scenario']} | {label} | " + " | ".join(cells) +
                       f" | {fmt(s['idle_rss_kb'][srv], 'mb')} | {s['flagged_runs'][srv]} |")
        ratios = [f"**{s[k]['ratio']:.2f}x**" if s[k]["ratio"] else "-" for k, _, _, _ in METRICS]
        rr = s["idle_rss_kb"]["ratio"]
        out.append(f"| {res['scenario']} | moongate/nginx | " + " | ".join(ratios) +
                   f" | {f'{rr:.2f}x' if rr else '-'} | |")
    costs = baseline_costs(results)
    if costs:
        out += [""] + [f"- {c}" for c in costs]
    return out


# -- --instructions -----------------------------------------------------------

def median_range(values: list) -> dict | None:
    """{"median", "min", "max"} of the values that are not None (None if none are)."""
    vals = [v for v in values if v is not None]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)} if vals else None


def summarize_instructions(result: dict) -> dict:
    runs = result["servers"]["moongate"]["runs"]
    return {
        "ir_per_request": median_range([r.get("ir_per_request") for r in runs]),
        "requests": median_range([r.get("requests") for r in runs]),
        "flagged_runs": {"moongate": sum(1 for r in runs if r["flagged"])},
    }


def instr_settings(args) -> str:
    return (f"moongate workers={args.moongate_workers} under callgrind, "
            f"wrk -t{INSTR_THREADS} -c{INSTR_CONNECTIONS} -d{args.duration}s after a {INSTR_WARMUP_S} s "
            f"warm-up, counters zeroed before each of {args.rounds} round(s)")


def instr_text_table(results: list[dict], args) -> str:
    """One row per scenario: Ir/request and requests per round, median (min–max)."""
    rows = [["scenario", "Ir/request  median (min–max)", "requests/round  median (min–max)", "flagged runs"]]
    for res in results:
        if "summary" not in res:
            rows.append([res["scenario"], "(failed)", "", ""])
            continue
        runs = res["servers"]["moongate"]["runs"]
        rows.append([res["scenario"], spread([r.get("ir_per_request") for r in runs], "int"),
                     spread([r.get("requests") for r in runs], "int"),
                     f"{res['summary']['flagged_runs']['moongate']}/{len(runs)}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["== user-space instructions per request (callgrind Ir; kernel time not included)",
             f"   {instr_settings(args)}"]
    for i, r in enumerate(rows):
        lines.append("   " + "  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip())
        if i == 0:
            lines.append("   " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def instr_baseline_costs(results: list[dict]) -> list[str]:
    """For each scenario with a baseline that ran in the same run: the share of
    its instructions that its extra work adds, 1 - baseline Ir/request ÷ its
    Ir/request (medians)."""
    done = {r["scenario"]: r for r in results if "summary" in r}
    lines = []
    for name, res in done.items():
        base = SCENARIOS[name].baseline
        if not base or base not in done:
            continue
        a, b = res["summary"]["ir_per_request"], done[base]["summary"]["ir_per_request"]
        if a and b and a["median"]:
            lines.append(f"{name} over {base}: its extra work is {1 - b['median'] / a['median']:.1%} of its "
                         f"instructions, +{a['median'] / b['median'] - 1:.1%} over {base}'s "
                         f"({fmt(a['median'], 'int')} vs {fmt(b['median'], 'int')} Ir/request, medians)")
    return lines


def instr_markdown(results: list[dict], meta: dict, args) -> str:
    v, m = meta["versions"], meta["machine"]
    out = [f"### {meta['date']} — `{meta['command']}`", "",
           f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), load {m['loadavg_start']} → {m['loadavg_end']}, "
           f"kernel {m['kernel']}. {v.get('valgrind') or 'valgrind ?'}, {v['wrk']}, "
           f"{v['moongate'] or 'moongate ?'} (repo {v['git']}). User-space instructions (callgrind Ir) "
           f"per request, kernel not included; {instr_settings(args)}; median (min–max).", "",
           "| scenario | Ir/request | requests/round | flagged |",
           "|---|---:|---:|---:|"]
    for res in results:
        if "summary" not in res:
            out.append(f"| {res['scenario']} | (failed: {res.get('error', '?').splitlines()[0]}) | | |")
            continue
        runs = res["servers"]["moongate"]["runs"]
        out.append(f"| {res['scenario']} | {spread([r.get('ir_per_request') for r in runs], 'int')} | "
                   f"{spread([r.get('requests') for r in runs], 'int')} | "
                   f"{res['summary']['flagged_runs']['moongate']} |")
    costs = instr_baseline_costs(results)
    if costs:
        out += [""] + [f"- {c}" for c in costs]
    return "\n".join(out)


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------

class Run:
    def __init__(self, args):
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="moongate-bench-"))
        # nginx workers run as "nobody" when started by root: let them in.
        os.chmod(self.dir, 0o755)
        self.nginx = which("nginx")
        self.cert: tuple[Path, Path] | None = None
        self.origin: Server | None = None
        self.origin_port = 0
        self.services: list[Server] = []   # per scenario (redis), see prepare()
        self.grpc_ports: set[int] = set()  # the scenario's gRPC echo servers (grpc_app)
        _BODY_DIR[:] = [self.dir]

    # -- pieces -------------------------------------------------------------

    def tls_cert(self) -> tuple[Path, Path]:
        if self.cert is None:
            d = self.dir / "tls"
            d.mkdir()
            cert, key = d / "cert.pem", d / "key.pem"
            if self.args.cert_type == "rsa":
                newkey = ["-newkey", "rsa:2048"]
            else:
                newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
            argv = [which("openssl") or "openssl", "req", "-x509", *newkey, "-nodes",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-days", "2", "-keyout", str(key), "-out", str(cert)]
            p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
            if p.returncode != 0:
                raise BenchError(f"openssl failed ({shlex.join(argv)}):\n{p.stderr}")
            for f in (cert, key):
                os.chmod(f, 0o644)   # throwaway self-signed pair; moongate may run as another user
            self.cert = (cert, key)
        return self.cert

    def start_with_port(self, make, attempts: int = 3, timeout: float | None = None) -> Server:
        """make(port) -> Server; retry with a new port if someone took ours.
        timeout: how long it may take to listen (default --start-timeout)."""
        for attempt in range(attempts):
            server = make(free_port())
            try:
                server.start(timeout or self.args.start_timeout)
                return server
            except StartError as e:
                server.stop()
                if "in use" in str(e).lower() and attempt + 1 < attempts:
                    warn(f"  {server.label}: port {server.port} taken, trying another")
                    continue
                raise
        raise AssertionError("unreachable")

    def nginx_server(self, label: str, template: str, d: Path, values: dict,
                     workers: int | None, tls: bool = False) -> callable:
        def make(port: int) -> Server:
            d.mkdir(parents=True, exist_ok=True)
            (d / "logs").mkdir(exist_ok=True)
            v = dict(values, LISTEN=f"{HOST}:{port}", ORIGIN_LISTEN=f"{HOST}:{port}")
            render(BENCH_DIR / "nginx" / template, d / "nginx.conf", v)
            argv = [self.nginx, "-p", f"{d}/", "-c", str(d / "nginx.conf")]
            if workers is not None:
                argv += ["-g", f"worker_processes {workers};"]
            return Server(label, argv, d, d / "logs" / "stdout.log", port, tls)
        return make

    def moongate_server(self, sc: Scenario, d: Path, values: dict,
                        prefix: list[str] | None = None) -> callable:
        """moongate on sc's conf.d template; prefix goes in front of the command
        (e.g. valgrind's)."""
        def make(port: int) -> Server:
            confd = d / "conf.d"
            confd.mkdir(parents=True, exist_ok=True)
            render(BENCH_DIR / "moongate" / sc.moongate, confd / "00-bench.toml",
                   dict(values, LISTEN=f"{HOST}:{port}"))
            scheme = "https" if sc.tls else "http"
            return Server("moongate", [*(prefix or []), str(self.args.moongate), "run", "-c", str(confd)], d,
                          d / "moongate.log", port, sc.tls,
                          ready_text=f"listening on {scheme}://{HOST}:{port}")
        return make

    def start_origin(self) -> None:
        d = self.dir / "origin"
        # nginx takes no 10 KB string in its config: /page is a file.
        d.mkdir(parents=True, exist_ok=True)
        (d / "page.html").write_text(page_10k())
        values = {"PAGE_FILE": str(d / "page.html")}
        self.origin = self.start_with_port(self.nginx_server("origin", "origin.conf", d, values, None))
        self.origin_port = self.origin.port
        status, body, _ = http_get(f"http://{HOST}:{self.origin_port}/hello")
        if status != 200 or len(body) != 100:
            raise BenchError(f"origin /hello answered {status} with {len(body)} bytes (want 200, 100 B)")
        log(f"origin: nginx pid {self.origin.pid} on {HOST}:{self.origin_port}")

    def check(self, sc: Scenario, servers: dict[str, Server], thorough: bool,
              timeout: float = 5) -> list[str]:
        """Both servers answer sc.expect_status with the same body (like for like),
        send sc.expect_headers, and answer each of sc.probes as expected.  With one
        server, only the status, headers and probes (the bodies are compared
        between requests, not between servers)."""
        problems, bodies = [], {}
        if sc.h2:
            # nginx 1.22 speaks only HTTP/2 on an `http2` plain listener:
            # h2load itself checks (statuses only; bodies are not compared).
            for srv, server in servers.items():
                argv = [which("h2load") or "h2load", "-n5", "-c1"] + h2_request_args(sc)
                out = cmd_output(argv + [server.url(sc.path)], timeout=timeout + 5)
                r = parse_h2load(out)
                if r["requests"] != 5 or r["non2xx"]:
                    problems.append(f"{srv}: h2load {sc.path}: {out.strip()[-300:]!r}")
                if sc.grpc_app:
                    problems += self.grpc_check(sc, srv, server, timeout)
            return problems
        for srv, server in servers.items():
            for i in range(max(5 if thorough else 1, 2 if sc.warm_headers else 1)):
                try:
                    status, body, hdrs = http_get(server.url(sc.path), sc.headers, timeout)
                    # Two gzip encoders need not make the same bytes: the
                    # content is what must be alike.
                    if {k.lower(): v for k, v in hdrs.items()}.get("content-encoding") == "gzip":
                        body = gzip.decompress(body)
                except (OSError, EOFError) as e:
                    problems.append(f"{srv}: GET {server.url(sc.path)} failed: {e}")
                    break
                if status != sc.expect_status:
                    problems.append(f"{srv}: GET {sc.path} -> {status} (want {sc.expect_status}): "
                                    f"{body[:200]!r}")
                    break
                lower = {k.lower(): v for k, v in hdrs.items()}
                for k, want in sc.expect_headers.items():
                    if lower.get(k.lower()) != want:
                        problems.append(f"{srv}: GET {sc.path} -> {k}: {lower.get(k.lower())!r} "
                                        f"(want {want!r})")
                for k, want in (sc.warm_headers.items() if i > 0 else ()):
                    if lower.get(k.lower()) != want:
                        problems.append(f"{srv}: GET {sc.path} (request {i + 1}) -> {k}: "
                                        f"{lower.get(k.lower())!r} (want {want!r})")
                if srv in bodies and bodies[srv] != body:
                    problems.append(f"{srv}: body changed between requests")
                bodies[srv] = body
            for pr in sc.probes:
                try:
                    status, body, _ = http_get(server.url(pr.path), pr.headers, timeout)
                except OSError as e:
                    problems.append(f"{srv}: GET {pr.path} ({pr.what}) failed: {e}")
                    continue
                if status != pr.expect_status:
                    problems.append(f"{srv}: GET {pr.path} ({pr.what}) -> {status} "
                                    f"(want {pr.expect_status}): {body[:200]!r}")
        if thorough and len(bodies) == 2 and bodies["nginx"] != bodies["moongate"]:
            problems.append(f"bodies differ: nginx {len(bodies['nginx'])} B {bodies['nginx'][:120]!r} / "
                            f"moongate {len(bodies['moongate'])} B {bodies['moongate'][:120]!r}")
        return problems

    def grpc_check(self, sc: Scenario, srv: str, server: Server, timeout: float) -> list[str]:
        """What h2load cannot see, with nghttp: the call's answer is its request
        (the echo) with grpc-status 0 in the trailers, and an unknown method
        gets the echo server's grpc-status 12 (a trailers-only answer) through."""
        problems = []
        nghttp = which("nghttp") or "nghttp"
        argv = [nghttp, "-v"] + h2_request_args(sc)
        try:
            p = subprocess.run([nghttp] + h2_request_args(sc) + [server.url(sc.path)],
                               capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout + 5)
            body = p.stdout
        except subprocess.TimeoutExpired:
            body = b"(timed out)"
        if body != sc.body:
            problems.append(f"{srv}: {sc.path} answered {body[:120]!r} (want the request echoed)")
        for path, want in ((sc.path, "0"), ("/echo.Echo/Nope", "12")):
            out = cmd_output(argv + [server.url(path)], timeout=timeout + 5, ok_codes=(0, 1))
            got = re.findall(r"recv \(stream_id=\d+\) grpc-status: (\d+)", out)
            if ":status: 200" not in out or got != [want]:
                problems.append(f"{srv}: {path}: want HTTP 200 and grpc-status {want}, got "
                                f"{got or 'none'}: {out.strip()[-300:]!r}")
        return problems

    def still_running(self, server: Server, when: str) -> None:
        for s in (server, self.origin):
            if s.proc.poll() is not None:
                raise BenchError(f"{s.label} (pid {s.pid}) exited with status {s.proc.returncode} "
                                 f"during {when}; log {s.log_path}:\n{tail(s.log_path)}")

    # -- one scenario --------------------------------------------------------

    def prepare(self, sc: Scenario) -> tuple[Path, dict]:
        """sc's run directory, with sc.files written there, and the template values.
        A scenario that runs again (--connections 50,256) gets a new directory
        (NAME.2, NAME.3, ...): fresh caches, fresh logs."""
        d = self.dir / sc.name
        for i in range(2, 1000):               # bounded: a scenario runs a few times at most
            if not d.exists():
                break
            d = self.dir / f"{sc.name}.{i}"
        d.mkdir()
        os.chmod(d, 0o755)
        # nginx's "keepalive 64" is per worker process; moongate's pool is
        # one per process: the same idle connections in all.
        values = {"ORIGIN": f"{HOST}:{self.origin_port}", "WORKERS": self.args.moongate_workers_toml,
                  "KEEPALIVE": str(64 * self.args.nginx_workers),
                  "RUN_DIR": str(d), "BENCH_DIR": str(BENCH_DIR),
                  **{k: v.replace("@RUN_DIR@", str(d)) for k, v in sc.vars.items()}}
        if sc.tls:
            cert, key = self.tls_cert()
            values.update(CERT=str(cert), KEY=str(key))
        for name, content in sc.files.items():
            (d / name).write_text(content)
            os.chmod(d / name, 0o644)
        if sc.redis:
            redis = self.start_redis(d / "redis")
            values["REDIS_URL"] = f"redis://{HOST}:{redis.port}"
        if sc.slow_origin:
            slow = self.start_with_port(self.nginx_server("slow-origin", "origin-slow.conf",
                                                          d / "slow-origin", values, None))
            self.services.append(slow)
            values["ORIGIN"] = f"{HOST}:{slow.port}"
            log(f"   slow origin: nginx pid {slow.pid} on {HOST}:{slow.port} "
                f"(+{values['DELAY_S']} s per request, then the origin)")
        if sc.uwsgi_app:
            app = self.start_uwsgi(d / "uwsgi")
            values["UWSGI"] = f"{HOST}:{app.port}"
        if sc.grpc_app:
            ports = self.start_grpc_echo(d / "grpc")
            values["GRPC_NGINX_SERVERS"] = " ".join(f"server {HOST}:{p};" for p in ports)
            values["GRPC_MOONGATE_SERVERS"] = ", ".join(f'{{ addr = "{HOST}:{p}" }}' for p in ports)
        return d, values

    def start_grpc_echo(self, d: Path) -> list[int]:
        """GRPC_PROCESSES gRPC echo servers (bench/grpc/echo.js) for one
        scenario, each on a free loopback port; stop_services() stops them by PID."""
        d.mkdir(parents=True, exist_ok=True)
        ports = []
        for i in range(GRPC_PROCESSES):
            def make(port: int, i=i) -> Server:
                argv = [which("node") or "node", str(BENCH_DIR / "grpc" / "echo.js"), str(port), HOST]
                return Server(f"grpc-echo-{i}", argv, d, d / f"echo-{i}.log", port, False)
            server = self.start_with_port(make)
            self.services.append(server)
            ports.append(server.port)
        self.grpc_ports = set(ports)
        log(f"   grpc: {GRPC_PROCESSES} echo servers (node) on {', '.join(f'{HOST}:{p}' for p in ports)}")
        return ports

    def start_uwsgi(self, d: Path) -> Server:
        """The uWSGI app (UWSGI_APP) for one scenario, in d, on a free loopback
        port; stop_services() stops it (and its workers) by PID."""
        d.mkdir(parents=True, exist_ok=True)
        (d / "app.py").write_text(UWSGI_APP)

        def make(port: int) -> Server:
            argv = [which("uwsgi") or "uwsgi", "--plugin", "python3", "--socket", f"{HOST}:{port}",
                    "--wsgi-file", str(d / "app.py"), "--master", "--processes", str(UWSGI_PROCESSES),
                    "--listen", "1024", "--disable-logging", "--die-on-term"]
            return Server("uwsgi", argv, d, d / "uwsgi.log", port, False)
        server = self.start_with_port(make)
        self.services.append(server)
        log(f"   uwsgi: app pid {server.pid} on {HOST}:{server.port} ({UWSGI_PROCESSES} processes)")
        return server

    def start_redis(self, d: Path) -> Server:
        """A redis-server for one scenario, in d, on a free loopback port (no
        persistence); stop_services() stops it by PID."""
        d.mkdir(parents=True, exist_ok=True)

        def make(port: int) -> Server:
            argv = [which("redis-server") or "redis-server", "--port", str(port), "--bind", HOST,
                    "--save", "", "--appendonly", "no", "--dir", str(d)]
            return Server("redis", argv, d, d / "redis.log", port, False)
        server = self.start_with_port(make)
        self.services.append(server)
        log(f"   redis: redis-server pid {server.pid} on {HOST}:{server.port}")
        return server

    def stop_services(self) -> None:
        """Stops what prepare() started for a scenario (redis, the slow origin, a uWSGI app)."""
        while self.services:
            self.services.pop().stop()
        self.grpc_ports = set()

    def check_ok(self, sc: Scenario, servers: dict[str, Server], timeout: float = 5) -> None:
        """check(), logged; BenchError if it found anything."""
        args = self.args
        problems = self.check(sc, servers, thorough=args.check, timeout=timeout)
        if problems:
            raise BenchError("check failed (" + ("--check" if args.check else "smoke test") +
                             "):\n  " + "\n  ".join(problems))
        extra = "".join([", " + ", ".join(f"{k}: {v}" for k, v in sc.expect_headers.items())
                         if sc.expect_headers else "",
                         *(f", {pr.what} -> {pr.expect_status}" for pr in sc.probes)])
        what = "smoke test"
        if args.check:
            what = ("check: same status and body from both" if len(servers) > 1
                    else "check: same status and body every time")
        log(f"   {what}{extra}: ok")

    def start_pair(self, sc: Scenario, d: Path, values: dict, servers: dict[str, Server]) -> None:
        """Starts sc's nginx and moongate, into servers["nginx"] and servers["moongate"]
        as they come up (the caller stops whatever is there, also after an error)."""
        servers["nginx"] = self.start_with_port(
            self.nginx_server("nginx", sc.nginx, d / "nginx", values, self.args.nginx_workers, sc.tls))
        servers["moongate"] = self.start_with_port(self.moongate_server(sc, d, values))

    def warm_up(self, sc: Scenario, servers: dict[str, Server], result: dict) -> None:
        """WARMUP_S of wrk against each server, recorded in result["servers"][srv]["warmup"]."""
        for srv, server in servers.items():
            w = measure(self.args, sc, server, self.origin_port, self.origin.pid, WARMUP_S,
                        upstream_ports=self.grpc_ports)
            self.still_running(server, "warm-up")
            result["servers"][srv]["warmup"] = {k: w.get(k) for k in ("requests", "rps", "problems")}
            if w["flagged"]:
                warn(f"   !!! warm-up {srv}: {'; '.join(w['problems'])}")

    def scenario(self, sc: Scenario) -> dict:
        args = self.args
        d, values = self.prepare(sc)
        result: dict = {"scenario": sc.name, "summary_text": sc.summary, "path": sc.path,
                        "headers": sc.headers, "tls": sc.tls, "servers": {}}
        servers: dict[str, Server] = {}
        try:
            self.start_pair(sc, d, values, servers)
            for srv, server in servers.items():
                result["servers"][srv] = {"pid": server.pid, "url": server.url(sc.path),
                                          "argv": server.argv, "runs": []}
            log(f"\n== {sc.name}: nginx pid {servers['nginx'].pid} {servers['nginx'].url(sc.path)} | "
                f"moongate pid {servers['moongate'].pid} {servers['moongate'].url(sc.path)}")

            self.check_ok(sc, servers)

            for srv, server in servers.items():
                mem = tree_memory_kb(server.tree())
                result["servers"][srv]["idle_memory"] = mem
                log(f"   idle RSS {srv}: {mem['rss_kb'] / 1024:.1f} MB over {len(mem['processes'])} "
                    f"process(es) (PSS {mem['pss_kb'] / 1024:.1f} MB)")

            self.warm_up(sc, servers, result)

            for rnd in range(1, args.rounds + 1):
                for srv in SERVERS:
                    # redis serves only moongate; the slow origin serves both, so it is nobody's
                    helpers = (tuple(h for h in self.services if h.label == "redis")
                               if srv == "moongate" else ())
                    r = measure(args, sc, servers[srv], self.origin_port, self.origin.pid,
                                args.duration, helpers, self.grpc_ports)
                    r["round"] = rnd
                    result["servers"][srv]["runs"].append(r)
                    self.still_running(servers[srv], f"round {rnd}")
                    upstream = (f"upstream conns open {r['upstream_conns_open']}"
                                if "upstream_conns_open" in r else
                                f"upstream conns +{r.get('origin_new_conns', '?')}")
                    log(f"   round {rnd}/{args.rounds}  {srv:<8}  {fmt(r['rps'], 'int'):>9} req/s  "
                        f"p50 {fmt(r['p50_ms'], 'ms'):>6} ms  p99 {fmt(r['p99_ms'], 'ms'):>6} ms  "
                        f"{fmt(r['rpcs'], 'int'):>9} req/CPU-s  cpu {fmt(r['cpu_cores'], 'f2')} cores  "
                        f"user {fmt(r['user_us'], 'us')} sys {fmt(r['sys_us'], 'us')} µs/req  "
                        f"{upstream}{'  FLAGGED' if r['flagged'] else ''}")
                    if r["flagged"]:
                        warn(f"   !!! FLAGGED {sc.name} round {rnd} {srv}: {'; '.join(r['problems'])}")

            for srv, server in servers.items():
                result["servers"][srv]["memory_after"] = tree_memory_kb(server.tree())
            result["summary"] = summarize(result)
        except BenchError as e:
            result["error"] = str(e)
            warn(f"!!! scenario {sc.name} failed: {e}")
        finally:
            for server in servers.values():
                server.stop()
            self.stop_services()
        return result

    # -- one scenario, --instructions ------------------------------------------

    def instructions(self, sc: Scenario) -> dict:
        """moongate alone under callgrind: a warm-up, then --rounds times zero the
        counters, run wrk, dump them, and divide the dump's Ir by the requests."""
        args = self.args
        d, values = self.prepare(sc)
        result: dict = {"scenario": sc.name, "summary_text": sc.summary, "path": sc.path,
                        "headers": sc.headers, "tls": sc.tls, "servers": {}}
        server: Server | None = None
        try:
            server = self.start_with_port(self.moongate_server(sc, d, values, callgrind_prefix(d)),
                                          timeout=max(args.start_timeout, INSTR_START_TIMEOUT_S))
            server.grace = INSTR_STOP_GRACE_S
            result["servers"]["moongate"] = {"pid": server.pid, "url": server.url(sc.path),
                                             "argv": server.argv, "runs": []}
            log(f"\n== {sc.name}: moongate under callgrind, pid {server.pid} {server.url(sc.path)}")
            self.check_ok(sc, {"moongate": server}, timeout=INSTR_CHECK_TIMEOUT_S)

            load_argv = h2load_argv if sc.h2 else wrk_argv
            argv = load_argv(args, sc, server.url(sc.path), INSTR_WARMUP_S, INSTR_THREADS, INSTR_CONNECTIONS)
            text, rc = run_wrk(argv, INSTR_WARMUP_S)
            self.still_running(server, "warm-up")
            w = parse_h2load(text) if sc.h2 else parse_wrk(text)
            w["problems"] = wrk_problems(w, rc)
            result["servers"]["moongate"]["warmup"] = {k: w.get(k) for k in ("requests", "rps", "problems")}
            if w["problems"]:
                warn(f"   !!! warm-up moongate: {'; '.join(w['problems'])}")

            for rnd in range(1, args.rounds + 1):
                r = self.callgrind_round(sc, server, d, rnd)
                r["round"] = rnd
                result["servers"]["moongate"]["runs"].append(r)
                self.still_running(server, f"round {rnd}")
                log(f"   round {rnd}/{args.rounds}  {fmt(r['requests'], 'int'):>7} requests  "
                    f"{fmt(r['ir'], 'int'):>15} Ir  {fmt(r['ir_per_request'], 'int'):>8} Ir/request"
                    f"{'  FLAGGED' if r['flagged'] else ''}")
                if r["flagged"]:
                    warn(f"   !!! FLAGGED {sc.name} round {rnd}: {'; '.join(r['problems'])}")
            result["summary"] = summarize_instructions(result)
        except BenchError as e:
            result["error"] = str(e)
            warn(f"!!! scenario {sc.name} failed: {e}")
        finally:
            if server is not None:
                server.stop()
            self.stop_services()
        return result

    def callgrind_round(self, sc: Scenario, server: Server, d: Path, part: int) -> dict:
        """Zero callgrind's counters, run wrk -t1 -c4, dump the counters (dump
        number part, i.e. callgrind.out.<pid>.<part>) and read the Ir it counted."""
        args = self.args
        load_argv = h2load_argv if sc.h2 else wrk_argv
        argv = load_argv(args, sc, server.url(sc.path), args.duration, INSTR_THREADS, INSTR_CONNECTIONS)
        callgrind_control("-z", server.pid)
        text, rc = run_wrk(argv, args.duration)
        callgrind_control("-d", server.pid)
        dump = d / f"callgrind.out.{server.pid}.{part}"
        totals = wait_for_dump(dump)
        r = parse_h2load(text) if sc.h2 else parse_wrk(text)
        ir = totals["totals"]
        r.update({
            "server": server.label,
            "wrk_exit": rc,
            "dump": str(dump),
            "ir": ir,
            "ir_summary_line": totals.get("summary"),
            "ir_per_request": ir / r["requests"] if r["requests"] else None,
        })
        r["problems"] = wrk_problems(r, rc)
        r["flagged"] = bool(r["problems"])
        if r["problems"]:
            r["wrk_output"] = text
        return r


# The --idle-connections and --syscalls modes live in bench/modes.py, which
# imports this module as "run".  When run.py is the script (__main__), that must
# be this very module, not a second copy with its own list of live servers.
sys.modules.setdefault("run", sys.modules[__name__])
import modes  # noqa: E402  (after everything modes.py takes from here)


def machine_info() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "host": platform.node(), "mem_total_kb": _status_kb("/proc/meminfo", "MemTotal"),
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def versions(moongate: Path) -> dict:
    mg = cmd_output([str(moongate), "--version"]).splitlines()
    git = cmd_output(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"]) or "no commit"
    if cmd_output(["git", "-C", str(REPO_DIR), "status", "--porcelain", "--untracked-files=no"]):
        git += "+dirty"
    return {
        "nginx": (cmd_output([which("nginx") or "nginx", "-v"]).splitlines() or ["nginx ?"])[0]
        .replace("nginx version: ", ""),
        "wrk": " ".join((cmd_output([which("wrk") or "wrk", "-v"], ok_codes=(0, 1)).splitlines()
                         or ["wrk ?"])[0].split()[:2]),
        "openssl": cmd_output([which("openssl") or "openssl", "version"]),
        "moongate": mg[0] if mg and "moongate" in mg[0].lower() else None,
        "git": git,
    }


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(
        description="moongate vs nginx side by side (SPEC §11). See bench/README.md.")
    p.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                   help=f"comma-separated, from: {', '.join(SCENARIOS)} (default {DEFAULT_SCENARIOS})")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"A B rounds per scenario (default 5; {modes.IDLE_ROUNDS} with --idle-connections)")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--connections", default="50",
                   help="wrk -c (default 50); a comma list (50,256) runs every scenario at each")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    p.add_argument("--moongate", default=None,
                   help="moongate binary (relative: to the current directory, else to the repo root; default "
                        "target/release/moongate, and with --allocations a build with --features alloc-count "
                        f"that run.py makes in {modes.ALLOC_TARGET_DIR})")
    p.add_argument("--moongate-workers", default="1", help='moongate [server] workers (default 1; or "auto")')
    p.add_argument("--nginx-workers", type=int, default=1, help="nginx worker_processes (default 1)")
    p.add_argument("--out", default=str(BENCH_DIR / "out"), help="where the JSON and Markdown go (default bench/out)")
    p.add_argument("--check", action="store_true",
                   help="before measuring, check both servers return the same status and body")
    p.add_argument("--keep", action="store_true",
                   help="keep the run directory in /tmp (rendered configs, server logs)")
    p.add_argument("--cert-type", choices=("ec", "rsa"), default="ec",
                   help="self-signed key for the TLS scenarios: ec (P-256, default) or rsa (2048)")
    p.add_argument("--start-timeout", type=float, default=30.0, help="seconds a server may take to listen")
    p.add_argument("--instructions", action="store_true",
                   help="instead: moongate alone under valgrind's callgrind, user-space instructions per "
                        f"request (wrk -t{INSTR_THREADS} -c{INSTR_CONNECTIONS}; ignores --threads/--connections)")
    p.add_argument("--idle-connections", type=int, metavar="N", default=None, nargs="?", const=modes.IDLE_DEFAULT_N,
                   help="instead: RSS per idle keep-alive client connection of each server, with the proxy "
                        f"scenario's configs: open N (default {modes.IDLE_DEFAULT_N}), one request each, then idle")
    p.add_argument("--syscalls", action="store_true",
                   help="instead: syscalls per request of each server, counted by strace -f -c during a "
                        "wrk run (strace slows the servers: read the counts, not the rates)")
    p.add_argument("--allocations", action="store_true",
                   help="instead: moongate's heap allocations, reallocations, frees and bytes per request, from "
                        "a counting build (--features alloc-count) read through its admin GET /status")
    p.add_argument("--alloc-sites", action="store_true",
                   help="with --allocations: also each allocation site's allocations per request, under "
                        "valgrind's DHAT (a --features alloc-system build, which run.py makes)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = p.parse_args(argv)
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.name:<12} {sc.summary}\n{'':<12} nginx/{sc.nginx}  moongate/{sc.moongate}  "
                  f"{method(sc)} {sc.path}{''.join('  -H ' + repr(k + ': ' + v) for k, v in sc.headers.items())}"
                  f"{'  (TLS)' if sc.tls else ''}")
        sys.exit(0)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        p.error(f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(SCENARIOS)}")
    args.scenario_list = [with_jwt(SCENARIOS[n]) for n in names]
    chosen = [m for m, on in (("--instructions", args.instructions), ("--syscalls", args.syscalls),
                              ("--idle-connections", args.idle_connections is not None),
                              ("--allocations", args.allocations)) if on]
    if len(chosen) > 1:
        p.error(f"{' and '.join(chosen)} are separate modes: give one")
    if args.alloc_sites and not args.allocations:
        p.error("--alloc-sites goes with --allocations")
    if args.idle_connections is not None:       # always the proxy scenario's configs
        args.scenario_list = [SCENARIOS[modes.IDLE_SCENARIO]]
    if args.rounds is None:
        args.rounds = modes.IDLE_ROUNDS if args.idle_connections is not None else 5
    try:
        args.connections_list = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        p.error(f"--connections: numbers separated by commas, not {args.connections!r}")
    if not args.connections_list or len(set(args.connections_list)) != len(args.connections_list):
        p.error("--connections: one or more different numbers, e.g. 50 or 50,256")
    args.connections = args.connections_list[0]     # the current one; see with_connections()
    if (args.rounds < 1 or args.duration < 1 or args.threads < 1
            or min(args.connections_list) < args.threads):
        p.error("need --rounds >= 1, --duration >= 1, --threads >= 1, --connections >= --threads")
    if args.idle_connections is not None and not 1 <= args.idle_connections <= modes.IDLE_MAX_N:
        p.error(f"--idle-connections: 1 to {modes.IDLE_MAX_N} (nginx's worker_connections is 8192 in the templates)")
    w = args.moongate_workers
    if not (w == "auto" or (w.isdigit() and int(w) > 0)):
        p.error('--moongate-workers: a positive number or "auto"')
    args.moongate_workers_toml = w if w.isdigit() else f'"{w}"'
    return args


def resolve_moongate(arg: str) -> Path:
    p = Path(arg)
    if not p.is_absolute():
        p = (Path.cwd() / p) if (Path.cwd() / p).exists() else (REPO_DIR / p)
    return p.resolve()


def missing_tools(args) -> int:
    """0 when every tool and file the run needs is there; else print what is
    missing and the apt-get line that installs it, and return 2."""
    missing = [t for t in ("nginx", "wrk", "openssl") if which(t) is None]
    if missing:
        warn(f"missing tool(s): {', '.join(missing)}. Install them with:\n    {INSTALL_HINT}")
        return 2
    if args.instructions:
        missing = [t for t in ("valgrind", "callgrind_control") if which(t) is None]
        if missing:
            warn(f"missing tool(s): {', '.join(missing)}. Install them with:\n    {VALGRIND_HINT}")
            return 2
    if args.alloc_sites and which("valgrind") is None:
        warn(f"missing tool: valgrind. Install it with:\n    {VALGRIND_HINT}")
        return 2
    if args.allocations and (args.moongate is None or args.alloc_sites) and which("cargo") is None:
        warn("missing tool: cargo, to build the counting binary (or pass --moongate PATH, "
             "built with --features alloc-count, and leave out --alloc-sites)")
        return 2
    if args.syscalls and which("strace") is None:
        warn(f"missing tool: strace. Install it with:\n    {modes.STRACE_HINT}")
        return 2
    if any(sc.redis for sc in args.scenario_list) and which("redis-server") is None:
        warn(f"missing tool: redis-server. Install it with:\n    {REDIS_HINT}")
        return 2
    if any(sc.grpc_app for sc in args.scenario_list):   # the echo servers and the load, in every mode
        missing = [t for t in ("node", "h2load", "nghttp") if which(t) is None]
        if missing:
            warn(f"missing tool(s): {', '.join(missing)}. Install them with:\n    {GRPC_HINT}")
            return 2
    for sc in args.scenario_list:   # needs: the nginx side, and the slow origin (in both modes)
        if (args.instructions or args.allocations) and not sc.slow_origin:
            continue
        absent = [f for f in sc.needs if not os.path.exists(f)]
        if absent:
            warn(f"scenario {sc.name} needs {', '.join(absent)}. Install with:\n    {sc.needs_hint}")
            return 2
    return 0


def with_connections(args, connections: int):
    """A copy of args for one concurrency of --connections a,b,...: args.connections = connections."""
    return argparse.Namespace(**dict(vars(args), connections=connections))


def run_scenarios(run: Run, args, results: list[dict]) -> None:
    """The mode's measurements, one result per scenario (and concurrency),
    appended to results as they come: an interrupted run keeps the finished ones."""
    if args.idle_connections is not None:
        results.append(modes.idle_connections(run))
        return
    if args.instructions:
        for sc in args.scenario_list:
            results.append(run.instructions(sc))
        return
    for c in args.connections_list:
        run.args = with_connections(args, c)
        for sc in args.scenario_list:
            if args.allocations:
                res = modes.allocations(run, sc)
            else:
                res = modes.syscalls(run, sc) if args.syscalls else run.scenario(sc)
            res["connections"] = c
            results.append(res)
    run.args = args
    if args.alloc_sites:      # after the counts: the same path, now the alloc-system build
        binary = modes.build_counting("alloc-system")
        for sc in args.scenario_list:
            results.append(modes.alloc_sites(run, sc, binary))


def report(results: list[dict], meta: dict, args) -> None:
    """Print the mode's tables, then write and print its Markdown block and JSON."""
    done = [r for r in results if "summary" in r]
    if args.idle_connections is not None:
        text, md_fn, stem = modes.idle_text(results, args), modes.idle_markdown, "idle-"
    elif args.syscalls:
        text, md_fn, stem = modes.syscalls_text(results, args), modes.syscalls_markdown, "syscalls-"
    elif args.allocations:
        text, md_fn, stem = modes.allocations_text(results, args), modes.allocations_markdown, "allocations-"
    elif args.instructions:
        text = instr_text_table(results, args) + "\n" + "".join(c + "\n" for c in instr_baseline_costs(results))
        md_fn, stem = instr_markdown, "instructions-"
    else:
        blocks = []
        for _, group in by_connections(done):
            blocks += [text_table(SCENARIOS[res["scenario"]], res, args) + "\n" for res in group]
            blocks += [c + "\n" for c in baseline_costs(group)]
        text, md_fn, stem = "\n".join(blocks), markdown, "bench-"
    if done:
        log("\n" + text)
    if results:
        md = md_fn(results, meta, args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem += dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
        (out / f"{stem}.md").write_text(md + "\n")
        log("Markdown (for bench/RESULTS.md):\n")
        log(md)
        log(f"\nraw numbers: {out / stem}.json")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status = missing_tools(args)
    if status:
        return status
    if args.allocations and args.moongate is None:
        try:
            args.moongate = modes.build_counting("alloc-count")
        except BenchError as e:
            warn(f"!!! {e}")
            return 2
    args.moongate = resolve_moongate(args.moongate or "target/release/moongate")
    if not (args.moongate.is_file() and os.access(args.moongate, os.X_OK)):
        warn(f"no moongate binary at {args.moongate}: build it with `cargo build --release`, "
             f"or pass --moongate PATH")
        return 2
    if args.idle_connections is not None:
        problem = modes.raise_nofile(args.idle_connections)
        if problem:
            warn(problem)
            return 2

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    atexit.register(stop_all)

    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python3 bench/run.py" + ("".join(" " + shlex.quote(a) for a in (argv or sys.argv[1:]))),
            "machine": machine_info(), "versions": versions(args.moongate),
            "clk_tck": CLK_TCK,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                         if k not in ("scenario_list", "list")}}
    if args.instructions or args.alloc_sites:
        meta["versions"]["valgrind"] = cmd_output([which("valgrind") or "valgrind", "--version"])
    if args.syscalls:
        meta["versions"]["strace"] = (cmd_output([which("strace") or "strace", "-V"]).splitlines() or ["?"])[0]
    run = Run(args)
    log(f"run dir {run.dir}; moongate {args.moongate}; {meta['versions']['nginx']}, {meta['versions']['wrk']}; "
        f"load {meta['machine']['loadavg_start']}")
    results: list[dict] = []
    status = 0
    try:
        run.start_origin()
        run_scenarios(run, args, results)
    except KeyboardInterrupt:
        warn("\ninterrupted: stopping servers")
        status = 130
    except BenchError as e:
        warn(f"!!! {e}")
        status = 1
    finally:
        stop_all()
        if args.keep:
            log(f"run dir kept: {run.dir}")
        else:
            shutil.rmtree(run.dir, ignore_errors=True)

    meta["machine"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report(results, meta, args)
    done = [r for r in results if "summary" in r]
    flagged = sum(sum(r["summary"]["flagged_runs"].values()) for r in done)
    failed = [r["scenario"] for r in results if "error" in r]
    if flagged:
        warn(f"\n!!! {flagged} run(s) had errors (non-2xx responses, socket errors, wrk failures, "
             f"closed connections); their figures are flagged in the tables and the JSON")
    if failed:
        warn(f"!!! scenario(s) failed: {', '.join(failed)}")
    if status == 0 and (flagged or failed):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
