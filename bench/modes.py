"""Three modes of bench/run.py that measure something else than wrk's req/CPU-s:

    python3 bench/run.py --idle-connections [N] [--rounds 3]
        memory per idle keep-alive client connection: each server's process-tree
        RSS when idle, then with N idle keep-alive connections open
    python3 bench/run.py --syscalls [--scenarios proxy,proxy-api] [--connections 50]
        syscalls per request of each server, counted by strace -f -c during a wrk run
    python3 bench/run.py --allocations [--alloc-sites] [--scenarios proxy,proxy-api]
        moongate's heap allocations (and reallocations, frees, bytes) per request,
        from a counting build; --alloc-sites: where they come from (valgrind's DHAT)

run.py imports this module and calls idle_connections() / syscalls() / allocations() with its
Run (origin, run directory, args); everything else (servers, checks, wrk,
/proc) comes from run.py.  Standard library only.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import run as R   # bench/run.py: the running script (run.py makes sure of it)

# --------------------------------------------------------------------------
# --idle-connections
# --------------------------------------------------------------------------

IDLE_SCENARIO = "proxy"        # its configs; the origin as usual
IDLE_DEFAULT_N = 2000
IDLE_ROUNDS = 3                # the default --rounds of this mode
IDLE_MAX_N = 8000              # nginx: worker_connections 8192 in the templates, minus the upstream pool
IDLE_BATCH = 50                # connections opened (and requests in flight) at a time
IDLE_WARM_PER_CONN = 8         # warm-up: IDLE_BATCH connections x 8 requests = 400 requests
IDLE_SETTLE_S = 1.0            # after the warm-up, before the idle sample
IDLE_WAIT_S = 2.0              # with the N connections open and idle, before the sample
IDLE_IO_TIMEOUT_S = 10.0       # connect, and every batch's responses
NOFILE_MARGIN = 512            # open files besides the N sockets (run.py, and moongate, which inherits)
IDLE_REQUEST = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"


def raise_nofile(n: int) -> str | None:
    """Raise RLIMIT_NOFILE so that this process (N client sockets) and moongate
    (which inherits the limit: N accepted sockets) can hold n connections.
    None when done; else the message to print (run.py exits 2)."""
    need = n + NOFILE_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    try:
        if hard != resource.RLIM_INFINITY and hard < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))   # raising the hard limit: root only
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    except (ValueError, OSError) as e:
        return (f"--idle-connections {n} needs {need} open files, but RLIMIT_NOFILE is {soft} "
                f"(hard limit {hard}) and could not be raised ({e}). Raise the hard limit "
                f"(`ulimit -Hn {need}` as root, or /etc/security/limits.conf) or ask for fewer connections.")
    return None


def response_status(buf: bytes) -> int | None:
    """The status of a complete HTTP/1.1 response in buf (head plus a
    Content-Length body), None while incomplete.  BenchError without a
    Content-Length: the idle connection must stay usable, so no close framing."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    length = None
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise R.BenchError(f"response without Content-Length: {head[0]!r}")
    if len(buf) < end + 4 + length:
        return None
    if len(buf) > end + 4 + length:
        raise R.BenchError(f"{len(buf) - end - 4 - length} bytes after the response: {head[0]!r}")
    return int(head[0].split()[1])


def read_responses(socks: list[socket.socket]) -> Counter:
    """Reads one whole response on each socket (non-blocking, one selector);
    returns how many came with each status.  BenchError when one is closed
    early or they are not all in within IDLE_IO_TIMEOUT_S."""
    statuses: Counter = Counter()
    bufs = {s: b"" for s in socks}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + IDLE_IO_TIMEOUT_S
        pending = len(socks)
        while pending:                         # bounded by the deadline
            left = deadline - time.monotonic()
            if left <= 0:
                raise R.BenchError(f"{pending} of {len(socks)} responses incomplete after "
                                   f"{IDLE_IO_TIMEOUT_S:.0f}s")
            for key, _ in sel.select(left):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    raise R.BenchError(f"reading a response: {e}")
                if not data:
                    raise R.BenchError("the server closed a connection before its response was complete")
                bufs[s] += data
                status = response_status(bufs[s])
                if status is not None:
                    sel.unregister(s)
                    statuses[status] += 1
                    pending -= 1
    return statuses


def open_with_request(port: int, count: int) -> list[socket.socket]:
    """count new connections to port, each with IDLE_REQUEST sent on it."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.create_connection((R.HOST, port), timeout=IDLE_IO_TIMEOUT_S)
            socks.append(s)
            s.sendall(IDLE_REQUEST)
    except OSError as e:
        close_all(socks)
        raise R.BenchError(f"opening connection {len(socks) + 1} of a batch of {count} to "
                           f"{R.HOST}:{port}: {e}")
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
    socks.clear()


def still_open(socks: list[socket.socket]) -> int:
    """How many of socks the server has not closed: a non-blocking peek that
    would block (EAGAIN) means open and idle; b"" or an error means closed."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            n += 1
            continue
        except OSError:
            continue
        if data:                               # open, but the server sent something unasked
            n += 1
    return n


def warm_up_idle(port: int) -> Counter:
    """IDLE_BATCH keep-alive connections, IDLE_WARM_PER_CONN requests on each
    (one at a time per connection), then closed: a few hundred requests, and an
    upstream pool as large as one batch of the measurement needs."""
    socks = open_with_request(port, IDLE_BATCH)
    try:
        statuses = read_responses(socks)
        for _ in range(IDLE_WARM_PER_CONN - 1):
            for s in socks:
                s.setblocking(True)
                s.sendall(IDLE_REQUEST)
            statuses += read_responses(socks)
    finally:
        close_all(socks)
    return statuses


def idle_server(server: "R.Server", n: int) -> dict:
    """One server, one round: warm-up, idle sample, then n connections opened
    IDLE_BATCH at a time with one request each (responses read whole), left
    idle IDLE_WAIT_S, sampled, checked still open, and closed."""
    warm = warm_up_idle(server.port)
    time.sleep(IDLE_SETTLE_S)
    before = R.tree_memory_kb(server.tree())
    socks: list[socket.socket] = []
    statuses: Counter = Counter()
    try:
        t0 = time.monotonic()
        for i in range(0, n, IDLE_BATCH):
            batch = open_with_request(server.port, min(IDLE_BATCH, n - i))
            socks += batch
            statuses += read_responses(batch)
        open_s = time.monotonic() - t0
        time.sleep(IDLE_WAIT_S)
        after = R.tree_memory_kb(server.tree())
        open_after = still_open(socks)
    finally:
        close_all(socks)
    r = {"server": server.label, "connections": n, "open_s": round(open_s, 3),
         "warmup_statuses": dict(warm), "statuses": dict(statuses),
         "idle_rss_kb": before["rss_kb"], "idle_pss_kb": before["pss_kb"],
         "rss_kb": after["rss_kb"], "pss_kb": after["pss_kb"],
         "kb_per_conn": (after["rss_kb"] - before["rss_kb"]) / n,
         "pss_kb_per_conn": (after["pss_kb"] - before["pss_kb"]) / n,
         "still_open": open_after, "idle_memory": before, "memory": after}
    problems = []
    if statuses.get(200, 0) != n or warm.get(200, 0) != sum(warm.values()):
        problems.append(f"statuses {dict(statuses)} (warm-up {dict(warm)}), want 200 only")
    if open_after != n:
        problems.append(f"only {open_after} of {n} connections still open after {IDLE_WAIT_S:.0f} s idle")
    r["problems"], r["flagged"] = problems, bool(problems)
    return r


def idle_connections(run: "R.Run") -> dict:
    """--idle-connections: --rounds rounds; each starts the proxy scenario's
    nginx and moongate afresh (so no round inherits another's freed memory),
    runs the smoke check, measures nginx then moongate (idle_server), and
    stops both."""
    args, n = run.args, run.args.idle_connections
    sc = R.SCENARIOS[IDLE_SCENARIO]
    d, values = run.prepare(sc)
    result: dict = {"scenario": sc.name, "mode": "idle-connections", "connections": n,
                    "servers": {srv: {"runs": []} for srv in R.SERVERS}}
    R.log(f"\n== idle keep-alive connections: {sc.name} configs, {n} connections, "
          f"{args.rounds} round(s), servers restarted each round")
    try:
        for rnd in range(1, args.rounds + 1):
            servers: dict[str, R.Server] = {}
            try:
                run.start_pair(sc, d, values, servers)
                run.check_ok(sc, servers)
                for srv in R.SERVERS:
                    r = idle_server(servers[srv], n)
                    r["round"], r["pid"] = rnd, servers[srv].pid
                    result["servers"][srv]["runs"].append(r)
                    run.still_running(servers[srv], f"round {rnd}")
                    R.log(f"   round {rnd}/{args.rounds}  {srv:<8}  idle {r['idle_rss_kb'] / 1024:.1f} MB  "
                          f"with {n} open {r['rss_kb'] / 1024:.1f} MB  {r['kb_per_conn']:.2f} KB/conn "
                          f"(PSS {r['pss_kb_per_conn']:.2f})  open after {IDLE_WAIT_S:.0f} s: {r['still_open']}"
                          f"{'  FLAGGED' if r['flagged'] else ''}")
                    if r["flagged"]:
                        R.warn(f"   !!! FLAGGED round {rnd} {srv}: {'; '.join(r['problems'])}")
            finally:
                for server in servers.values():
                    server.stop()
        result["summary"] = summarize_idle(result)
    except R.BenchError as e:
        result["error"] = str(e)
        R.warn(f"!!! --idle-connections failed: {e}")
    finally:
        run.stop_services()
    return result


IDLE_METRICS = [   # key, label, format
    ("idle_rss_kb", "idle RSS MB", "mb"),
    ("idle_pss_kb", "idle PSS MB", "mb"),
    ("rss_kb", "RSS with {n} idle MB", "mb"),
    ("kb_per_conn", "KB/conn (RSS)", "f2"),
    ("pss_kb_per_conn", "KB/conn (PSS)", "f2"),
    ("still_open", "open after wait", "int"),
]


def summarize_idle(result: dict) -> dict:
    """Medians (and ranges) of IDLE_METRICS per server, moongate/nginx ratios, flagged runs."""
    summary: dict = {}
    for key, _, _ in IDLE_METRICS:
        entry = {srv: R.median_range([r.get(key) for r in result["servers"][srv]["runs"]]) for srv in R.SERVERS}
        nx, mg = entry["nginx"], entry["moongate"]
        entry["ratio"] = mg["median"] / nx["median"] if nx and mg and nx["median"] else None
        summary[key] = entry
    summary["flagged_runs"] = {srv: sum(1 for r in result["servers"][srv]["runs"] if r["flagged"])
                               for srv in R.SERVERS}
    return summary


def server_label(srv: str, args) -> str:
    if srv == "nginx":
        return f"nginx ({args.nginx_workers} worker{'s' if args.nginx_workers > 1 else ''})"
    return f"moongate (workers={args.moongate_workers})"


def idle_settings(args) -> str:
    return (f"{IDLE_SCENARIO} configs, {args.idle_connections} keep-alive connections opened "
            f"{IDLE_BATCH} at a time with one GET /hello each, then idle {IDLE_WAIT_S:.0f} s; idle figure after "
            f"a warm-up of {IDLE_BATCH * IDLE_WARM_PER_CONN} requests; VmRSS/PSS summed over the process "
            f"tree; {args.rounds} round(s), servers restarted each round; median (min–max)")


def idle_rows(result: dict, args) -> list[list[str]]:
    """Header, one row per server and the moongate/nginx row, for the text and Markdown tables."""
    s = result["summary"]
    rows = [["server"] + [label.format(n=args.idle_connections) for _, label, _ in IDLE_METRICS]
            + ["flagged"]]
    for srv in R.SERVERS:
        runs = result["servers"][srv]["runs"]
        rows.append([server_label(srv, args)] + [R.spread([r.get(k) for r in runs], kind)
                                                 for k, _, kind in IDLE_METRICS]
                    + [f"{s['flagged_runs'][srv]}/{len(runs)}"])
    rows.append(["moongate/nginx"] + [f"{s[k]['ratio']:.2f}x" if s[k]["ratio"] and k != "still_open" else ""
                                      for k, _, _ in IDLE_METRICS] + [""])
    return rows


def text_rows(rows: list[list[str]]) -> list[str]:
    """rows as aligned text lines, a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("   " + "  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip())
        if i == 0:
            lines.append("   " + "  ".join("-" * w for w in widths))
    return lines


def md_rows(rows: list[list[str]], left: tuple[int, ...] = (0,)) -> list[str]:
    """rows as a Markdown table, numbers right-aligned (the columns in left: left-aligned)."""
    lines = ["| " + " | ".join(rows[0]) + " |",
             "|" + "|".join("---" if i in left else "---:" for i in range(len(rows[0]))) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def idle_text(results: list[dict], args) -> str:
    out = []
    for res in results:
        out.append(f"== idle keep-alive client connections: {idle_settings(args)}")
        out += text_rows(idle_rows(res, args)) if "summary" in res else [f"   (failed: {res.get('error')})"]
    return "\n".join(out) + "\n"


def header(meta: dict, tools: str) -> list[str]:
    """The first lines of a Markdown block: command, date, machine, versions."""
    v, m = meta["versions"], meta["machine"]
    return [f"### {meta['date']} — `{meta['command']}`", "",
            f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), load {m['loadavg_start']} → {m['loadavg_end']}, "
            f"kernel {m['kernel']}. {v['nginx']}, {tools}{v['moongate'] or 'moongate ?'} (repo {v['git']})."]


def idle_markdown(results: list[dict], meta: dict, args) -> str:
    out = header(meta, "")
    out[-1] += f" Idle keep-alive client connections: {idle_settings(args)}."
    for res in results:
        out.append("")
        out += (md_rows(idle_rows(res, args)) if "summary" in res
                else [f"(failed: {res.get('error', '?').splitlines()[0]})"])
    return "\n".join(out)


# --------------------------------------------------------------------------
# --syscalls
# --------------------------------------------------------------------------

STRACE_HINT = "apt-get install -y strace"
STRACE_ATTACH_TIMEOUT_S = 10.0
STRACE_DETACH_TIMEOUT_S = 60.0     # strace writes its table on the way out
SYSCALL_TOP = 8                    # the most frequent syscalls shown per server


def trace_targets(srv: str, server: "R.Server") -> list[int]:
    """The processes to attach strace to: the nginx master's children (the
    workers, plus the cache manager and loader when there is a cache; the master
    takes no part in a request), or moongate's whole tree (one process, all its
    threads through -f, plus any child)."""
    tree = server.tree()
    return tree[1:] if srv == "nginx" else tree


def tracer_of(pid: int, tid: int) -> int | None:
    """TracerPid of thread tid of process pid (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def threads_of(pids: list[int]) -> list[tuple[int, int]]:
    """(pid, tid) of every thread of the processes."""
    out = []
    for pid in pids:
        try:
            out += [(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            pass
    return out


def wait_attached(strace: subprocess.Popen, pids: list[int], log: Path) -> int:
    """Waits until every thread of pids is traced by strace (TracerPid in
    /proc/PID/task/TID/status), which checks that -f -p PID took every thread
    and that the attach is over before wrk starts.  Returns the thread count."""
    deadline = time.monotonic() + STRACE_ATTACH_TIMEOUT_S
    while True:                                # bounded by the deadline
        threads = threads_of(pids)
        traced = [t for t in threads if tracer_of(*t) == strace.pid]
        if threads and len(traced) == len(threads):
            return len(threads)
        if strace.poll() is not None:
            raise R.BenchError(f"strace exited with status {strace.returncode} while attaching; "
                               f"log {log}:\n{R.tail(log)}")
        if time.monotonic() > deadline:
            raise R.BenchError(f"strace traces {len(traced)} of the {len(threads)} threads of "
                               f"{pids} after {STRACE_ATTACH_TIMEOUT_S:.0f}s")
        time.sleep(0.05)


def stop_strace(strace: subprocess.Popen) -> None:
    """SIGINT to strace by PID (it detaches and writes its summary), SIGKILL
    if it has not exited after STRACE_DETACH_TIMEOUT_S."""
    if strace.poll() is not None:
        return
    strace.send_signal(signal.SIGINT)
    try:
        strace.wait(STRACE_DETACH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        R.warn(f"  strace (pid {strace.pid}) still running {STRACE_DETACH_TIMEOUT_S:.0f}s after SIGINT: SIGKILL")
        strace.kill()
        strace.wait(5)


def parse_strace_summary(text: str) -> dict:
    """strace -c's table: {"calls": {syscall: calls}, "errors": {syscall: errors},
    "total": calls}.  Rows are "% time, seconds, usecs/call, calls, [errors], syscall"
    (errors is blank when 0); the last row, "total", is the sum."""
    calls, errors, total = {}, {}, None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) not in (5, 6) or not parts[0][0].isdigit():
            continue
        try:
            nums = [int(x) for x in parts[3:-1]]
        except ValueError:
            continue
        name = parts[-1]
        if name == "total":
            total = nums[0]
        else:
            calls[name] = nums[0]
            errors[name] = nums[1] if len(nums) > 1 else 0
    if total is None:
        raise R.BenchError(f"no strace -c summary (no \"total\" row) in:\n{text[-800:]}")
    return {"calls": calls, "errors": errors, "total": total}


def strace_round(run: "R.Run", sc: "R.Scenario", srv: str, server: "R.Server", out: Path) -> dict:
    """Attach strace -f -c to the server, wait until every thread is traced,
    run wrk, detach (SIGINT), and divide strace's counts by wrk's requests."""
    args = run.args
    pids = trace_targets(srv, server)
    argv = [R.which("strace") or "strace", "-f", "-c", "-qq", "-o", str(out)]
    for pid in pids:
        argv += ["-p", str(pid)]
    log = out.with_suffix(".log")
    with open(log, "wb") as logf:
        strace = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                  start_new_session=True, preexec_fn=R._child_setup)
    try:
        n_threads = wait_attached(strace, pids, log)
        load_argv = R.h2load_argv if sc.h2 else R.wrk_argv
        text, rc = R.run_wrk(load_argv(args, sc, server.url(sc.path), args.duration), args.duration)
    finally:
        stop_strace(strace)
    r = R.parse_h2load(text) if sc.h2 else R.parse_wrk(text)
    counts = parse_strace_summary(out.read_text(errors="replace"))
    n = r["requests"]
    r.update({"server": srv, "connections": args.connections, "wrk_exit": rc, "traced_pids": pids,
              "traced_threads": n_threads, "strace_exit": strace.returncode, "syscalls": counts["total"],
              "per_request": counts["total"] / n if n else None,
              "calls": counts["calls"], "errors": counts["errors"]})
    r["problems"] = R.wrk_problems(r, rc)
    r["flagged"] = bool(r["problems"])
    if r["problems"]:
        r["wrk_output"] = text
    return r


def syscalls(run: "R.Run", sc: "R.Scenario") -> dict:
    """--syscalls, one scenario at run.args.connections: start both servers,
    smoke check, warm up, then --rounds rounds of strace_round, nginx first."""
    args = run.args
    d, values = run.prepare(sc)
    result: dict = {"scenario": sc.name, "mode": "syscalls", "path": sc.path, "servers": {}}
    servers: dict[str, R.Server] = {}
    try:
        run.start_pair(sc, d, values, servers)
        for srv, server in servers.items():
            result["servers"][srv] = {"pid": server.pid, "argv": server.argv, "runs": []}
        R.log(f"\n== {sc.name} (syscalls, -c{args.connections}): nginx pid {servers['nginx'].pid} | "
              f"moongate pid {servers['moongate'].pid}")
        run.check_ok(sc, servers)
        run.warm_up(sc, servers, result)
        for rnd in range(1, args.rounds + 1):
            for srv in R.SERVERS:
                r = strace_round(run, sc, srv, servers[srv], d / f"strace-{srv}-{rnd}.txt")
                r["round"] = rnd
                result["servers"][srv]["runs"].append(r)
                run.still_running(servers[srv], f"round {rnd}")
                R.log(f"   round {rnd}/{args.rounds}  {srv:<8}  {R.fmt(r['requests'], 'int'):>8} requests  "
                      f"{R.fmt(r['syscalls'], 'int'):>9} syscalls  {R.fmt(r['per_request'], 'f2'):>6}/request  "
                      f"({r['traced_threads']} thread(s) traced){'  FLAGGED' if r['flagged'] else ''}")
                if r["flagged"]:
                    R.warn(f"   !!! FLAGGED {sc.name} round {rnd} {srv}: {'; '.join(r['problems'])}")
        result["summary"] = summarize_syscalls(result)
    except R.BenchError as e:
        result["error"] = str(e)
        R.warn(f"!!! scenario {sc.name} failed: {e}")
    finally:
        for server in servers.values():
            server.stop()
        run.stop_services()
    return result


def summarize_syscalls(result: dict) -> dict:
    """Per server: syscalls/request and requests per round (median, range), and
    each syscall's calls per request (median over rounds, 0 in a round without
    it), the SYSCALL_TOP most frequent first; the moongate/nginx ratio."""
    summary: dict = {"per_request": {}, "requests": {}, "top": {}, "flagged_runs": {}}
    for srv in R.SERVERS:
        runs = result["servers"][srv]["runs"]
        summary["per_request"][srv] = R.median_range([r.get("per_request") for r in runs])
        summary["requests"][srv] = R.median_range([r.get("requests") for r in runs])
        names = {name for r in runs for name in r["calls"]}
        per = {name: statistics.median([r["calls"].get(name, 0) / r["requests"] if r["requests"] else 0
                                        for r in runs]) for name in names}
        summary["top"][srv] = sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))[:SYSCALL_TOP]
        summary["flagged_runs"][srv] = sum(1 for r in runs if r["flagged"])
    nx, mg = summary["per_request"]["nginx"], summary["per_request"]["moongate"]
    summary["ratio"] = mg["median"] / nx["median"] if nx and mg and nx["median"] else None
    return summary


def top_text(top: list) -> str:
    """"writev 1.00, recvfrom 1.00, ...": the syscalls of top that round to 0.01 or more."""
    return ", ".join(f"{name} {per:.2f}" for name, per in top if per >= 0.005)


def syscalls_rows(results: list[dict], args) -> list[list[str]]:
    """Header, then per scenario one row per server and the ratio row."""
    rows = [["scenario", "server", "syscalls/request", "requests/round",
             "top syscalls per request (medians)", "flagged"]]
    for res in results:
        if "summary" not in res:
            rows.append([res["scenario"], f"(failed: {res.get('error', '?').splitlines()[0]})", "", "", "", ""])
            continue
        s = res["summary"]
        for srv in R.SERVERS:
            runs = res["servers"][srv]["runs"]
            rows.append([res["scenario"], server_label(srv, args),
                         R.spread([r.get("per_request") for r in runs], "f2"),
                         R.spread([r.get("requests") for r in runs], "int"),
                         top_text(s["top"][srv]), f"{s['flagged_runs'][srv]}/{len(runs)}"])
        rows.append([res["scenario"], "moongate/nginx", f"{s['ratio']:.2f}x" if s["ratio"] else "-", "", "", ""])
    return rows


def syscalls_settings(args, connections) -> str:
    return (f"strace -f -c attached during wrk -t{args.threads} -c{connections} -d{args.duration}s "
            f"(nginx: the master's children; moongate: every thread), after a {R.WARMUP_S} s warm-up; "
            f"{args.rounds} round(s), nginx then moongate; median (min–max). strace slows the servers: "
            f"the counts per request are the figure, not the rates")


def syscalls_text(results: list[dict], args) -> str:
    out = []
    for c, group in R.by_connections(results):
        out.append(f"== syscalls per request: {syscalls_settings(args, c)}")
        out += text_rows(syscalls_rows(group, args)) + [""]
    return "\n".join(out)


def syscalls_markdown(results: list[dict], meta: dict, args) -> str:
    out = header(meta, f"{meta['versions'].get('strace') or 'strace ?'}, {meta['versions']['wrk']}, ")
    groups = R.by_connections(results)
    out[-1] += f" Syscalls per request: {syscalls_settings(args, ','.join(str(c) for c, _ in groups))}."
    for c, group in groups:
        out.append("")
        if len(groups) > 1:
            out += [f"**{c} connections** (wrk -c{c})", ""]
        out += md_rows(syscalls_rows(group, args), left=(0, 1, 4))
    return "\n".join(out)


# --------------------------------------------------------------------------
# --allocations
# --------------------------------------------------------------------------
#
# Heap allocations per request, from a counting global allocator: a cargo
# feature (alloc-count, src/alloc_count.rs) wraps mimalloc and counts every
# alloc, realloc, free and byte asked for, per thread (no shared cache line on
# the request path); GET /status on an admin listener run.py adds
# (conf.d/01-alloc-admin.toml) reports the process totals.  Chosen over
# valgrind or heaptrack for the figure itself because it is exact and
# deterministic, at full speed, with the real allocator and -c50 like the
# other modes; valgrind's DHAT only answers the other question, *where* they
# come from (--alloc-sites), since it needs the system malloc and is ~50x slower.

ALLOC_TARGET_DIR = "target/alloc-count"
# Allocation counts do not depend on code generation: what the program asks
# the allocator for is the same with or without LTO, so the counting build
# skips the fat LTO of the release profile (minutes, against ~6 min).
ALLOC_BUILD_ENV = {"CARGO_PROFILE_RELEASE_LTO": "false", "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "16"}
ALLOC_BUILD_TIMEOUT_S = 3600.0
ALLOC_ADMIN_FILE = "01-alloc-admin.toml"     # next to the scenario's 00-bench.toml
ALLOC_ADMIN_SAMPLES = 5                      # back-to-back /status pairs: one /status request's cost
ALLOC_ADMIN_TIMEOUT_S = 5.0
ALLOC_KEYS = ("allocs", "reallocs", "frees", "bytes")


def alloc_build_argv(features: str) -> list[str]:
    """The cargo command that builds the counting binary with features."""
    return ["nice", "cargo", "build", "--release", "--features", features, "--target-dir", ALLOC_TARGET_DIR]


def alloc_build_command(features: str) -> str:
    """alloc_build_argv as a shell line, with its environment, to print and paste."""
    env = " ".join(f"{k}={v}" for k, v in ALLOC_BUILD_ENV.items())
    return f"{env} {' '.join(alloc_build_argv(features))}"


def build_counting(features: str) -> Path:
    """Builds moongate with features (alloc-count or alloc-system) in
    ALLOC_TARGET_DIR, LTO off; returns the binary.  Up to date: a second or
    two.  BenchError when cargo fails."""
    R.log(f"building the counting binary: (cd {R.REPO_DIR} && {alloc_build_command(features)})")
    argv = alloc_build_argv(features)
    if R.which("nice") is None:
        argv = argv[1:]
    env = dict(os.environ, **ALLOC_BUILD_ENV)
    try:
        p = subprocess.run(argv, cwd=R.REPO_DIR, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=ALLOC_BUILD_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as e:
        raise R.BenchError(f"cargo build --features {features} failed to run: {e}")
    if p.returncode != 0:
        raise R.BenchError(f"cargo build --features {features} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return (R.REPO_DIR / ALLOC_TARGET_DIR / "release" / "moongate").resolve()


def admin_counts(port: int) -> dict:
    """The "allocations" object of GET /status on the admin listener;
    BenchError when it is missing (a binary built without alloc-count)."""
    try:
        status, body, _ = R.http_get(f"http://{R.HOST}:{port}/status", timeout=ALLOC_ADMIN_TIMEOUT_S)
        counts = json.loads(body).get("allocations") if status == 200 else None
    except (OSError, ValueError) as e:
        raise R.BenchError(f"GET /status on the admin listener {R.HOST}:{port}: {e}")
    if not isinstance(counts, dict) or not all(isinstance(counts.get(k), int) for k in ALLOC_KEYS):
        raise R.BenchError(f"GET /status on {R.HOST}:{port} answered {status} without \"allocations\": is the "
                           f"binary built with --features alloc-count? ({alloc_build_command('alloc-count')})")
    return counts


def counts_diff(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in ALLOC_KEYS}


def admin_cost(port: int) -> dict:
    """What one GET /status adds to a window between two reads (the window
    holds the end of the first request and the start of the second, i.e.
    about one whole request, plus whatever the idle server does meanwhile):
    the median of ALLOC_ADMIN_SAMPLES back-to-back pairs, per counter."""
    diffs = []
    for _ in range(ALLOC_ADMIN_SAMPLES):
        a = admin_counts(port)
        diffs.append(counts_diff(a, admin_counts(port)))
    return {k: statistics.median(d[k] for d in diffs) for k in ALLOC_KEYS}


def alloc_round(run: "R.Run", sc: "R.Scenario", server: "R.Server", admin_port: int, cost: dict) -> dict:
    """Counters, wrk, counters: (difference - one /status request's cost) ÷ requests."""
    args = run.args
    load_argv = R.h2load_argv if sc.h2 else R.wrk_argv
    before = admin_counts(admin_port)
    text, rc = R.run_wrk(load_argv(args, sc, server.url(sc.path), args.duration), args.duration)
    after = admin_counts(admin_port)
    r = R.parse_h2load(text) if sc.h2 else R.parse_wrk(text)
    n = r["requests"]
    diff = counts_diff(before, after)
    r.update({"server": server.label, "connections": args.connections, "wrk_exit": rc,
              "counts": diff, "admin_cost": cost,
              "per_request": {k: (diff[k] - cost[k]) / n if n else None for k in ALLOC_KEYS}})
    r["problems"] = R.wrk_problems(r, rc)
    r["flagged"] = bool(r["problems"])
    if r["problems"]:
        r["wrk_output"] = text
    return r


def write_admin_conf(d: Path) -> int:
    """conf.d/01-alloc-admin.toml: an admin listener on a free loopback port
    (loopback: no token needed), next to the scenario's own file."""
    port = R.free_port()
    confd = d / "conf.d"
    confd.mkdir(parents=True, exist_ok=True)
    (confd / ALLOC_ADMIN_FILE).write_text(f"# bench/run.py --allocations: GET /status has the counters\n"
                                          f"[admin]\nlisten = \"{R.HOST}:{port}\"\n")
    return port


def allocations(run: "R.Run", sc: "R.Scenario") -> dict:
    """--allocations, one scenario: moongate alone (the counting build) with an
    admin listener, smoke check, warm-up, one /status request's cost, then
    --rounds rounds of alloc_round."""
    args = run.args
    d, values = run.prepare(sc)
    result: dict = {"scenario": sc.name, "mode": "allocations", "path": sc.path, "servers": {}}
    server: R.Server | None = None
    try:
        admin_port = write_admin_conf(d)
        server = run.start_with_port(run.moongate_server(sc, d, values))
        result["servers"]["moongate"] = {"pid": server.pid, "argv": server.argv, "runs": [],
                                         "admin_port": admin_port}
        R.log(f"\n== {sc.name} (allocations, -c{args.connections}): moongate pid {server.pid} "
              f"{server.url(sc.path)}, admin {R.HOST}:{admin_port}")
        run.check_ok(sc, {"moongate": server})
        admin_counts(admin_port)                # fails early without the feature
        load_argv = R.h2load_argv if sc.h2 else R.wrk_argv
        text, rc = R.run_wrk(load_argv(args, sc, server.url(sc.path), R.WARMUP_S), R.WARMUP_S)
        run.still_running(server, "warm-up")
        w = R.parse_h2load(text) if sc.h2 else R.parse_wrk(text)
        w["problems"] = R.wrk_problems(w, rc)
        result["servers"]["moongate"]["warmup"] = {k: w.get(k) for k in ("requests", "rps", "problems")}
        if w["problems"]:
            R.warn(f"   !!! warm-up moongate: {'; '.join(w['problems'])}")
        cost = admin_cost(admin_port)
        result["admin_cost"] = cost
        R.log(f"   one GET /status: {cost['allocs']:.0f} allocations, {cost['bytes']:.0f} bytes (subtracted)")
        for rnd in range(1, args.rounds + 1):
            r = alloc_round(run, sc, server, admin_port, cost)
            r["round"] = rnd
            result["servers"]["moongate"]["runs"].append(r)
            run.still_running(server, f"round {rnd}")
            p = r["per_request"]
            R.log(f"   round {rnd}/{args.rounds}  {R.fmt(r['requests'], 'int'):>9} requests  "
                  f"{R.fmt(p['allocs'], 'f2'):>6} allocs  {R.fmt(p['reallocs'], 'f2'):>6} reallocs  "
                  f"{R.fmt(p['frees'], 'f2'):>6} frees  {R.fmt(p['bytes'], 'int'):>7} bytes per request"
                  f"{'  FLAGGED' if r['flagged'] else ''}")
            if r["flagged"]:
                R.warn(f"   !!! FLAGGED {sc.name} round {rnd}: {'; '.join(r['problems'])}")
        result["summary"] = summarize_allocations(result)
    except R.BenchError as e:
        result["error"] = str(e)
        R.warn(f"!!! scenario {sc.name} failed: {e}")
    finally:
        if server is not None:
            server.stop()
        run.stop_services()
    return result


def summarize_allocations(result: dict) -> dict:
    runs = result["servers"]["moongate"]["runs"]
    summary = {k: R.median_range([(r["per_request"] or {}).get(k) for r in runs]) for k in ALLOC_KEYS}
    summary["requests"] = R.median_range([r.get("requests") for r in runs])
    summary["flagged_runs"] = {"moongate": sum(1 for r in runs if r["flagged"])}
    return summary


def allocations_rows(results: list[dict]) -> list[list[str]]:
    rows = [["scenario", "allocs/request", "reallocs/request", "frees/request", "bytes/request",
             "requests/round", "flagged"]]
    for res in results:
        if res.get("mode") != "allocations":
            continue
        if "summary" not in res:
            rows.append([res["scenario"], f"(failed: {res.get('error', '?').splitlines()[0]})", "", "", "", "", ""])
            continue
        runs = res["servers"]["moongate"]["runs"]
        rows.append([res["scenario"]] +
                    [R.spread([(r["per_request"] or {}).get(k) for r in runs], "int" if k == "bytes" else "f2")
                     for k in ALLOC_KEYS] +
                    [R.spread([r.get("requests") for r in runs], "int"),
                     f"{res['summary']['flagged_runs']['moongate']}/{len(runs)}"])
    return rows


def allocations_settings(args, connections) -> str:
    return (f"moongate workers={args.moongate_workers} alone, built with --features alloc-count "
            f"(`{alloc_build_command('alloc-count')}`: LTO off, which changes no allocation), counters read from "
            f"GET /status before and after wrk -t{args.threads} -c{connections} -d{args.duration}s, after a "
            f"{R.WARMUP_S} s warm-up, one /status request's own allocations subtracted; "
            f"{args.rounds} round(s); median (min–max). Rust's global allocator only (not LuaJIT's own heap)")


# -- --alloc-sites: where they come from (valgrind's DHAT) ---------------------

DHAT_NUM_CALLERS = 40
SITES_CONNECTIONS = 4          # wrk -t1 -c4, as --instructions: keeps moongate under valgrind busy
SITES_WARMUP_S = 3
SITES_MIN_PER_REQUEST = 0.005  # sites below this (startup noise, rare paths) are left out
# Frames that only carry an allocation through: the allocator, Rust's
# collections and smart pointers, std.  The site is the first frame below them.
# valgrind names an inlined frame by its short name (`alloc`, `with_capacity_in`),
# and std's own files sometimes by their base name only (`alloc.rs`), hence the
# names in STD_INLINED and "alloc::alloc::Global" in the generic arguments.
DHAT_SKIP = re.compile(
    r"^(\[root\]|malloc|calloc|realloc|free|posix_memalign|aligned_alloc|memalign|_?_?rust_|__rdl_|__rg_|"
    r"(alloc|core|std|hashbrown|smallvec)::|<(alloc|core|std|hashbrown|smallvec|moongate::alloc_count)::|"
    r"<(T|U|str|\[[^\]]*\]|&[^ ]*|u8) as |moongate::alloc_count::)")
STD_INLINED = {"alloc", "alloc_impl", "alloc_impl_runtime", "allocate", "try_allocate_in", "box_new_uninit",
               "exchange_malloc", "realloc", "grow", "grow_impl", "finish_grow", "grow_amortized", "grow_one"}
DHAT_FRAME = re.compile(r"^0x[0-9A-Fa-f]+: (.*?)(?: \(([^()]*:\d+)\)| \(in [^()]*\))?$")
RUST_HASH = re.compile(r"::h[0-9a-f]{16}$")


def dhat_frame(text: str) -> tuple[str, str]:
    """(function, file:line) of a DHAT frame string."""
    m = DHAT_FRAME.match(text)
    if not m:
        return text, ""
    return RUST_HASH.sub("", m.group(1)), m.group(2) or ""


def strip_generics(name: str) -> str:
    """name without the generic arguments that follow a path segment
    (`with_capacity<u8>` -> `with_capacity`); a leading `<T as Trait>` stays."""
    out, depth = [], 0
    for i, ch in enumerate(name):
        if depth:
            depth += {"<": 1, ">": -1}.get(ch, 0)
        elif ch == "<" and i and (name[i - 1].isalnum() or name[i - 1] in "_}"):
            depth = 1
        else:
            out.append(ch)
    return "".join(out)


def std_frame(fn: str, loc: str) -> bool:
    """A frame of the allocator, std or Rust's collections (see DHAT_SKIP)."""
    return (loc.startswith("library/") or bool(DHAT_SKIP.match(fn)) or "alloc::alloc::Global" in fn
            or strip_generics(fn) in STD_INLINED)


def dhat_site(stack: list[tuple[str, str]]) -> str:
    """One allocation stack's site: `where [via] ← moongate's frame`, where is
    the first frame below the allocator and std, via the std frame it called
    (what was allocated: `new<moongate::...>` is a Box of that, `clone` of a
    String ...), and, when where is not moongate's own function, the first
    moongate function under it (inlined frames carry no path, only a file:line)."""
    i = next((k for k, (fn, loc) in enumerate(stack) if not std_frame(fn, loc)), None)
    if i is None:
        return "(allocator and std frames only)"
    fn, loc = stack[i]
    name = f"{strip_generics(fn)} ({loc})" if loc else strip_generics(fn)
    if i > 0 and not stack[i - 1][0].startswith(("malloc", "calloc", "realloc", "[root]")):
        via = stack[i - 1][0]
        name += f" [{via if len(via) <= 100 else via[:97] + '...'}]"
    if not fn.startswith(("moongate::", "<moongate::")):
        own = next((f for f in stack[i + 1:] if f[0].startswith(("moongate::", "<moongate::"))), None)
        if own:
            name += f" ← {strip_generics(own[0])}" + (f" ({own[1]})" if own[1] else "")
    return name


def dhat_sites(path: Path) -> dict[str, list[int]]:
    """DHAT's JSON output as {site: [blocks, bytes]}, each program point's
    stack named by dhat_site().  In DHAT's JSON, "tbk" is a program point's
    total blocks and "tb" its total bytes."""
    try:
        data = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError) as e:
        raise R.BenchError(f"reading DHAT's output {path}: {e}")
    frames = [dhat_frame(f) for f in data.get("ftbl", [])]
    sites: dict[str, list[int]] = {}
    for pp in data.get("pps", []):
        name = dhat_site([frames[i] for i in pp.get("fs", []) if 0 <= i < len(frames)])
        acc = sites.setdefault(name, [0, 0])
        acc[0] += pp.get("tbk", 0)
        acc[1] += pp.get("tb", 0)
    return sites


def dhat_run(run: "R.Run", sc: "R.Scenario", d: Path, values: dict, binary: Path, load: bool) -> dict:
    """moongate (binary) under DHAT: start, smoke check, then with load a
    warm-up and a --duration run of wrk -t1 -cSITES_CONNECTIONS; stop (DHAT
    writes its file at exit).  Returns the sites and the requests wrk completed."""
    args = run.args
    prefix = [R.which("valgrind") or "valgrind", "--tool=dhat", f"--dhat-out-file={d}/dhat.out.%p",
              f"--num-callers={DHAT_NUM_CALLERS}", "--read-inline-info=yes"]
    saved, run.args = run.args, argparse.Namespace(**dict(vars(args), moongate=binary))
    server: R.Server | None = None
    wrk_runs = []
    try:
        server = run.start_with_port(run.moongate_server(sc, d, values, prefix),
                                     timeout=max(args.start_timeout, R.INSTR_START_TIMEOUT_S))
        server.grace = R.INSTR_STOP_GRACE_S
        run.check_ok(sc, {"moongate": server}, timeout=R.INSTR_CHECK_TIMEOUT_S)
        if load:
            load_argv = R.h2load_argv if sc.h2 else R.wrk_argv
            for secs in (SITES_WARMUP_S, args.duration):
                text, rc = R.run_wrk(load_argv(args, sc, server.url(sc.path), secs, 1, SITES_CONNECTIONS), secs)
                w = R.parse_h2load(text) if sc.h2 else R.parse_wrk(text)
                w["problems"] = R.wrk_problems(w, rc)
                wrk_runs.append({k: w.get(k) for k in ("requests", "rps", "problems")})
                run.still_running(server, "the DHAT run")
        pid = server.pid
    finally:
        if server is not None:
            server.stop()
        run.args = saved
    return {"pid": pid, "sites": dhat_sites(d / f"dhat.out.{pid}"), "wrk": wrk_runs,
            "requests": sum(w["requests"] or 0 for w in wrk_runs)}


def alloc_sites(run: "R.Run", sc: "R.Scenario", binary: Path) -> dict:
    """--alloc-sites, one scenario: two DHAT runs of the same binary, one that
    only starts and answers the smoke check, one that also serves a warm-up and
    a --duration wrk run; each site's blocks (allocations and reallocations,
    as DHAT counts them) and bytes in the second minus the first, ÷ the
    requests wrk completed: startup cancels out."""
    d, values = run.prepare(replace(sc, name=f"{sc.name}-sites"))   # its own run directory
    result: dict = {"scenario": sc.name, "mode": "alloc-sites", "path": sc.path}
    try:
        R.log(f"\n== {sc.name} (allocation sites, DHAT): a run that only starts, then one under load")
        idle = dhat_run(run, sc, d / "idle", values, binary, load=False)
        loaded = dhat_run(run, sc, d / "load", values, binary, load=True)
        n = loaded["requests"]
        if not n:
            raise R.BenchError("no requests completed under DHAT")
        rows = []
        for name, (blocks, nbytes) in loaded["sites"].items():
            b0, y0 = idle["sites"].get(name, (0, 0))
            rows.append({"site": name, "per_request": (blocks - b0) / n, "bytes_per_request": (nbytes - y0) / n})
        rows.sort(key=lambda r: (-round(r["per_request"], 2), -r["bytes_per_request"], r["site"]))
        total = sum(r["per_request"] for r in rows)
        shown = [r for r in rows if r["per_request"] >= SITES_MIN_PER_REQUEST]
        problems = [p for w in loaded["wrk"] for p in w["problems"]]
        result.update({"requests": n, "wrk": loaded["wrk"], "total_per_request": total,
                       "total_bytes_per_request": sum(r["bytes_per_request"] for r in rows),
                       "sites": shown, "left_out_per_request": total - sum(r["per_request"] for r in shown),
                       "problems": problems,
                       "summary": {"flagged_runs": {"moongate": 1 if problems else 0}}})
        R.log(f"   {n} requests under DHAT; {total:.2f} blocks/request over {len(shown)} sites shown")
    except R.BenchError as e:
        result["error"] = str(e)
        R.warn(f"!!! allocation sites of {sc.name} failed: {e}")
    finally:
        run.stop_services()
    return result


def sites_rows(res: dict) -> list[list[str]]:
    rows = [["allocation site (first frame below the allocator and std ← moongate's frame)",
             "allocs/request", "bytes/request"]]
    for r in res["sites"]:
        rows.append([r["site"].replace("|", "\\|"), f"{r['per_request']:.2f}", f"{r['bytes_per_request']:.0f}"])
    rows.append([f"(sites under {SITES_MIN_PER_REQUEST} per request)", f"{res['left_out_per_request']:.2f}", ""])
    rows.append(["total", f"{res['total_per_request']:.2f}", f"{res['total_bytes_per_request']:.0f}"])
    return rows


def sites_settings(args) -> str:
    return (f"valgrind --tool=dhat --num-callers={DHAT_NUM_CALLERS} on the --features alloc-system build "
            f"(the counting allocator over the system malloc, which DHAT intercepts), wrk -t1 "
            f"-c{SITES_CONNECTIONS}: a {SITES_WARMUP_S} s warm-up and {args.duration} s; each site's count in "
            f"that run minus a run that only started and answered the smoke check, ÷ the requests. DHAT counts "
            f"a realloc as an allocation")


def allocations_text(results: list[dict], args) -> str:
    out = []
    for c, group in R.by_connections([r for r in results if r.get("mode") == "allocations"]):
        out.append(f"== heap allocations per request: {allocations_settings(args, c)}")
        out += text_rows(allocations_rows(group)) + [""]
    for res in results:
        if res.get("mode") == "alloc-sites":
            out.append(f"== allocation sites of {res['scenario']}: {sites_settings(args)}")
            out += (text_rows(sites_rows(res)) if "summary" in res
                    else [f"   (failed: {res.get('error', '?').splitlines()[0]})"]) + [""]
    return "\n".join(out)


def allocations_markdown(results: list[dict], meta: dict, args) -> str:
    out = header(meta, f"{meta['versions']['wrk']}, ")
    counted = [r for r in results if r.get("mode") == "allocations"]
    groups = R.by_connections(counted)
    out[-1] += (f" Heap allocations per request: "
                f"{allocations_settings(args, ','.join(str(c) for c, _ in groups))}.")
    for c, group in groups:
        out.append("")
        if len(groups) > 1:
            out += [f"**{c} connections** (wrk -c{c})", ""]
        out += md_rows(allocations_rows(group))
    for res in results:
        if res.get("mode") != "alloc-sites":
            continue
        out += ["", f"Allocation sites of `{res['scenario']}` ({meta['versions'].get('valgrind', 'valgrind')}): "
                    f"{sites_settings(args)}; {res.get('requests', '?')} requests.", ""]
        out += (md_rows(sites_rows(res)) if "summary" in res
                else [f"(failed: {res.get('error', '?').splitlines()[0]})"])
    return "\n".join(out)
