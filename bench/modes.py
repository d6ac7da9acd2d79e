"""Two modes of bench/run.py that measure something else than wrk's req/CPU-s:

    python3 bench/run.py --idle-connections [N] [--rounds 3]
        memory per idle keep-alive client connection: each server's process-tree
        RSS when idle, then with N idle keep-alive connections open
    python3 bench/run.py --syscalls [--scenarios proxy,proxy-api] [--connections 50]
        syscalls per request of each server, counted by strace -f -c during a wrk run

run.py imports this module and calls idle_connections() / syscalls() with its
Run (origin, run directory, args); everything else (servers, checks, wrk,
/proc) comes from run.py.  Standard library only.  See bench/README.md.
"""

from __future__ import annotations

import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import time
from collections import Counter
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
