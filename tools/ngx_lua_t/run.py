#!/usr/bin/env python3
"""Runs the portable blocks of lua-nginx-module's Test::Nginx files
against a moongate binary and writes a Markdown report.

    tools/ngx_lua_t/run.py --moongate /path/to/moongate \
        --tests /work/ext/lua-nginx-module/t --out report.md [FILE...]

See README.md next to this file for what "portable" means.
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mgconf  # noqa: E402
import tparse  # noqa: E402
import translate  # noqa: E402
from tparse import Regex  # noqa: E402

TIME_BUDGET = "1s"

ACCEPTANCE = [
    "014-bugs.t",
    "016-resp-header.t",
    "020-subrequest.t",
    "024-access",
    "028-req-header.t",
    "034-match.t",
    "036-sub.t",
    "037-gsub.t",
    "038-match-o.t",
    "041-header-filter.t",
    "043-shdict.t",
    "047-match-jit.t",
    "062-count.t",
    "120-re-find.t",
    "145-shdict-list.t",
]


# ------------------------------------------------------------------ moongate


class Moongate:
    """One `moongate run` process on a conf.d; stderr collected."""

    def __init__(self, binary, conf, log_level):
        env = dict(os.environ)
        lua_level = {
            "debug": "debug",
            "info": "info",
            "notice": "info",
            "warn": "warn",
            "error": "error",
            "crit": "error",
            "alert": "error",
            "emerg": "error",
        }.get(log_level, "debug")
        env["RUST_LOG"] = "info,moongate::lua=%s" % lua_level
        env.pop("MOONGATE_TEST_LOG", None)
        self.proc = subprocess.Popen(
            [binary, "run", "-c", conf],
            cwd=conf,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.addr = None
        self.stdout = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.out_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self.out_reader.start()

    def _read_stdout(self):
        for raw in self.proc.stdout:
            with self.lock:
                self.stdout.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.lock:
                self.lines.append(line)
            m = re.search(r"listening on http://(\S+)", line)
            if m and self.addr is None and "admin" not in line:
                host, _, port = m.group(1).rpartition(":")
                self.addr = (host.strip("[]"), int(port))
            if "moongate ready" in line:
                self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout=20):
        self.ready.wait(timeout)
        return self.addr is not None and self.proc.poll() is None

    def log(self):
        with self.lock:
            return list(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.reader.join(2)
        self.out_reader.join(2)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -------------------------------------------------------------- HTTP client


class Response:
    def __init__(self):
        self.status = None
        self.reason = ""
        self.headers = []  # (name, value)
        self.raw_headers = ""
        self.body = b""
        self.error = None  # "timeout", "closed", ...

    def header(self, name):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        if not vals:
            return None
        return ", ".join(vals)

    def has_header(self, name):
        return any(k.lower() == name.lower() for k, _ in self.headers)

    def text(self):
        return self.body.decode("utf-8", "surrogateescape")


def build_request(spec, more_headers, conn="close"):
    """Test::Nginx's build_request_from_packets for one string request."""
    spec = re.sub(r"^(\s*#[^\n]+\s+|\s+)", "", spec)
    while True:
        new = re.sub(r"^\s*#[^\n]+\s+|^\s+", "", spec)
        if new == spec:
            break
        spec = new
    first, nl, content = spec.partition("\n")
    m = re.match(r"^(\s*)(\S+)( *)((\S+)( *))?((\S+)( *))?(\s*)$", first)
    if not m:
        raise ValueError("bad request line %r" % first)
    meth = m.group(2)
    url = m.group(5) or "/"
    ver = m.group(8) or "HTTP/1.1"
    hdrs, chunked = parse_more_headers(more_headers or "")
    len_header = ""
    if not chunked and content != "" and not re.search(r"(?:^|\n)Content-Length:", hdrs):
        content = content.strip()
        len_header = "Content-Length: %d\r\n" % len(content.encode("utf-8", "surrogateescape"))
    headers = ""
    if not re.search(r"(?:^|\n)Host:", hdrs, re.I | re.M):
        headers += "Host: localhost\r\n"
    if not re.search(r"(?:^|\n)Connection", hdrs, re.I | re.M):
        headers += "Connection: %s\r\n" % conn
    headers += hdrs + len_header + "\r\n"
    text = "%s %s %s\r\n%s%s" % (meth, url, ver, headers, content)
    return text.encode("utf-8", "surrogateescape"), meth


def parse_more_headers(text):
    out = ""
    chunked = False
    for h in re.split(r"\n+", text):
        if h == "" or re.match(r"^\s*#", h):
            continue
        parts = re.split(r":\s*", h, maxsplit=1)
        key, val = parts[0], (parts[1] if len(parts) > 1 else "")
        if key.lower() == "transfer-encoding" and val == "chunked":
            chunked = True
        out += "%s: %s\r\n" % (key, val)
    return out, chunked


def http_exchange(addr, data, methods, timeout):
    """Sends `data` (one or several pipelined requests) and reads one response
    per method in `methods` (HEAD responses have no body)."""
    out = []
    try:
        sock = socket.create_connection(addr, timeout=timeout)
    except OSError as e:
        r = Response()
        r.error = "connect: %s" % e
        return [r]
    deadline = time.time() + timeout
    buf = b""
    closed = False
    try:
        sock.sendall(data)

        def more():
            nonlocal buf, closed
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError()
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                return False
            buf += chunk
            return True

        pending = list(methods)
        while pending:
            meth = pending[0]
            r = Response()
            out.append(r)
            while b"\r\n\r\n" not in buf:
                if closed or not more():
                    r.error = "closed before the response head" if not buf else "incomplete head"
                    return out
            head, _, buf = buf.partition(b"\r\n\r\n")
            head = head.decode("latin-1")
            r.raw_headers = head + "\r\n"
            lines = head.split("\r\n")
            sm = re.match(r"^HTTP/\d\.\d (\d{3})(?: (.*))?$", lines[0])
            if not sm:
                r.error = "bad status line %r" % lines[0]
                return out
            r.status = int(sm.group(1))
            r.reason = sm.group(2) or ""
            for line in lines[1:]:
                k, _, v = line.partition(":")
                r.headers.append((k.strip(), v.strip()))
            if 100 <= r.status < 200 and r.status != 101:
                out.pop()  # an interim response (100 Continue): the real one follows
                continue
            pending.pop(0)
            if meth == "HEAD" or r.status in (204, 304, 101):
                continue
            te = (r.header("Transfer-Encoding") or "").lower()
            cl = r.header("Content-Length")
            if "chunked" in te:
                body = b""
                while True:
                    while b"\r\n" not in buf:
                        if closed or not more():
                            r.body = body
                            r.error = "truncated chunked body"
                            return out
                    size_line, _, rest = buf.partition(b"\r\n")
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    buf = rest
                    if size == 0:
                        while b"\r\n" not in buf:
                            if closed or not more():
                                break
                        # trailers: skip up to the empty line
                        while True:
                            line, sep, rest = buf.partition(b"\r\n")
                            if not sep:
                                break
                            buf = rest
                            if line == b"":
                                break
                        break
                    while len(buf) < size + 2:
                        if closed or not more():
                            r.body = body + buf[:size]
                            r.error = "truncated chunked body"
                            return out
                    body += buf[:size]
                    buf = buf[size + 2:]
                r.body = body
            elif cl is not None and re.match(r"^\d+$", cl.split(",")[0].strip()):
                n = int(cl.split(",")[0].strip())
                while len(buf) < n:
                    if closed or not more():
                        r.error = "truncated body (%d of %d bytes)" % (len(buf), n)
                        break
                r.body, buf = buf[:n], buf[n:]
            else:
                while not closed:
                    more()
                r.body, buf = buf, b""
    except TimeoutError:
        if out:
            out[-1].error = "timeout"
        else:
            r = Response()
            r.error = "timeout"
            out.append(r)
    except OSError as e:
        if out:
            out[-1].error = out[-1].error or "socket: %s" % e
        else:
            r = Response()
            r.error = "socket: %s" % e
            out.append(r)
    finally:
        sock.close()
    return out


# ------------------------------------------------------------------ checking


def short(v, n=300):
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    s = repr(v) if not isinstance(v, Regex) else repr(v)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


def indexed(v, i, n):
    """Test::Nginx's get_indexed_value: a list value gives one entry per request."""
    if isinstance(v, list) and n > 1:
        return v[i] if i < len(v) else None
    return v


def nginx_style_log(lines):
    """moongate's log lines as `[level] target: message` so nginx-style
    patterns like `[error]` can be looked for."""
    out = []
    for line in lines:
        m = re.match(r"^\S+Z\s+(ERROR|WARN|INFO|DEBUG|TRACE)\s+(.*)$", line)
        if m:
            lvl = {"ERROR": "error", "WARN": "warn", "INFO": "info", "DEBUG": "debug", "TRACE": "debug"}[m.group(1)]
            out.append("[%s] %s" % (lvl, m.group(2)))
        else:
            out.append(line)
    return out


def log_matches(pat, log_text):
    if isinstance(pat, Regex):
        return pat.compile().search(log_text) is not None
    return pat in log_text


def as_patterns(v):
    if v is None:
        return []
    if isinstance(v, list):
        return [p for p in v if p != ""]
    if isinstance(v, Regex):
        return [v]
    return [p for p in v.split("\n") if p != ""]


def expect_subst(v, plan):
    """Test::Nginx expands $ServerPort and $TEST_NGINX_* in expected values."""
    if isinstance(v, list):
        return [expect_subst(x, plan) for x in v]
    if isinstance(v, Regex):
        return Regex(expect_subst(v.pattern, plan), v.flags)
    if not isinstance(v, str):
        return v
    port = str(plan.port)
    v = re.sub(r"\$ServerPort(ForClient)?\b", port, v)
    v = v.replace("$TEST_NGINX_SERVER_PORT", port).replace("$TEST_NGINX_HTML_DIR", plan.html_dir)
    v = v.replace("@@HTML@@", plan.html_dir).replace("@@PORT@@", port)
    return v


class Expect:
    """A block's sections with expected values expanded."""

    def __init__(self, block, plan):
        self.block = block
        self.plan = plan

    def has(self, name):
        return self.block.has(name)

    def get(self, name):
        return expect_subst(self.block.get(name), self.plan)


def check_block(block, plan, responses, log_lines, stdout_lines=()):
    """Returns (ok, [failure strings], [notes])."""
    block = Expect(block, plan)
    fails = []
    notes = []
    n = len(responses)
    ignore = block.has("ignore_response")
    for i, r in enumerate(responses):
        tag = "" if n == 1 else "[req %d] " % (i + 1)
        if ignore:
            continue
        want_none = block.has("error_code") and str(indexed(block.get("error_code"), i, n) or "").strip() == ""
        if r.error and r.status is None:
            if not want_none:
                fails.append("%sno response: %s" % (tag, r.error))
            continue
        # status
        if block.has("error_code_like"):
            pat = indexed(block.get("error_code_like"), i, n)
            if pat is not None and not re.search(str(pat), str(r.status or ""), re.M | re.S):
                fails.append("%sstatus: expected like %s, got %s" % (tag, short(pat), r.status))
        else:
            want = indexed(block.get("error_code"), i, n) if block.has("error_code") else "200"
            if want is not None and str(want).strip() != str(r.status):
                fails.append("%sstatus: expected %s, got %s" % (
                    tag, str(want).strip() or "no response (empty --- error_code)", r.status))
        body = r.text()
        if block.has("response_body"):
            want = indexed(block.get("response_body"), i, n)
            if isinstance(want, Regex):
                if not want.compile().search(body):
                    fails.append("%sbody: expected like %s, got %s" % (tag, short(want), short(body)))
            elif want is not None and body != want:
                fails.append("%sbody: expected %s, got %s" % (tag, short(want), short(body)))
        elif block.has("response_body_like"):
            want = indexed(block.get("response_body_like"), i, n)
            if want is not None:
                rx = want.compile("s") if isinstance(want, Regex) else tparse.compile_perl_regex(
                    str(want), "s")
                if not rx.search(body):
                    fails.append("%sbody: expected like %s, got %s" % (tag, short(want), short(body)))
        elif block.has("response_body_unlike"):
            want = indexed(block.get("response_body_unlike"), i, n)
            if want is not None:
                rx = want.compile("s") if isinstance(want, Regex) else tparse.compile_perl_regex(str(want), "s")
                if rx.search(body):
                    fails.append("%sbody: expected unlike %s, got %s" % (tag, short(want), short(body)))
        if r.error:
            fails.append("%sresponse incomplete: %s" % (tag, r.error))
        if block.has("response_headers"):
            spec = indexed(block.get("response_headers"), i, n)
            for line in (spec or "").split("\n"):
                line = line.strip()
                if not line:
                    continue
                if line.startswith("!"):
                    key = line[1:].strip()
                    if r.has_header(key):
                        fails.append("%sheader %s: expected absent, got %s" % (tag, key, short(r.header(key))))
                    continue
                parts = re.split(r"\s*:\s*", line, maxsplit=1)
                key, val = parts[0], (parts[1] if len(parts) > 1 else "")
                got = r.header(key) or ""
                if got != val:
                    fails.append("%sheader %s: expected %s, got %s" % (tag, key, short(val), short(got)))
        if block.has("response_headers_like"):
            spec = indexed(block.get("response_headers_like"), i, n)
            for line in (spec or "").split("\n"):
                line = line.strip()
                if not line or ":" not in line:
                    continue
                key, val = re.split(r"\s*:\s*", line, maxsplit=1)
                got = r.header(key) or ""
                if not tparse.compile_perl_regex("^" + val + "$", "").search(got):
                    fails.append("%sheader %s: expected like %s, got %s" % (tag, key, short(val), short(got)))
        for sec, negate in (("raw_response_headers_like", False), ("raw_response_headers_unlike", True)):
            if block.has(sec):
                pat = indexed(block.get(sec), i, n)
                rx = pat.compile("s") if isinstance(pat, Regex) else tparse.compile_perl_regex(str(pat), "s")
                found = rx.search(r.raw_headers) is not None
                if found == negate:
                    hint = ""
                    if not negate:
                        rxi = re.compile(rx.pattern, rx.flags | re.I)
                        if rxi.search(r.raw_headers):
                            hint = " (matches ignoring case)"
                    fails.append("%sraw headers: expected %s %s, got %s%s" % (
                        tag, "unlike" if negate else "like", short(pat), short(r.raw_headers), hint))
    log = nginx_style_log(log_lines)
    log_text = "\n".join(log)
    for pat in as_patterns(block.get("no_error_log")):
        if log_matches(pat, log_text):
            hit = next((l for l in log if log_matches(pat, l)), "")
            fails.append("no_error_log %s: found %s" % (short(pat), short(hit, 400)))
    unchecked = 0
    for pat in as_patterns(block.get("error_log")):
        c = translate.checkable_error_log(pat, plan)
        if c is None:
            unchecked += 1
            continue
        if not log_matches(c, log_text):
            where = ""
            # Lua's own print separates its arguments with tabs; ngx_lua's does not.
            if stdout_lines and log_matches(c, "\n".join(stdout_lines).replace("\t", "")):
                where = " (it is on moongate's stdout: print() does not write to the log)"
            fails.append("error_log %s: not in moongate's log%s" % (short(c), where))
    if unchecked:
        notes.append("%d error_log pattern(s) in nginx's own wording not checked" % unchecked)
    return not fails, fails, notes


# ------------------------------------------------------------------- running


class Result:
    def __init__(self, file, block):
        self.file = file
        self.name = block.name
        self.line = block.line
        self.portable = False
        self.reason = None
        self.ok = False
        self.fails = []
        self.notes = []
        self.log_tail = []
        self.secs = 0.0
        self.translations = []
        self.core = False


def seconds(v, default):
    """A Test::Nginx duration (`3`, `0.5`, `2s`, `500ms`) in seconds."""
    m = re.match(r"^\s*([\d.]+)\s*(ms|s)?\s*$", str(v or ""))
    if not m:
        return default
    n = float(m.group(1))
    return n / 1000.0 if m.group(2) == "ms" else n


def translations(block, plan):
    """Which of the runner's nginx-to-moongate stand-ins a block relies on."""
    t = []
    if any(r.static for r in plan.routes):
        t.append("static location")
    if any(r.upstream_self for r in plan.routes):
        t.append("proxy_pass to itself")
    if re.search(r"^\s*echo\b", block.get("config") or "", re.M):
        t.append("echo")
    return t


def run_block(binary, tfile, block, keep=False):
    res = Result(tfile.path, block)
    try:
        plan = translate.plan_block(tfile, block)
    except translate.NotPortable as e:
        res.reason = str(e)
        return res
    res.portable = True
    res.translations = translations(block, plan)
    res.core = not res.translations
    t0 = time.time()
    root = tempfile.mkdtemp(prefix="ngxlua-")
    mg = None
    try:
        port = free_port() if plan.needs_port else 0
        conf = mgconf.write_conf(plan, root, port, TIME_BUDGET)
        plan.html_dir = os.path.join(root, "html")
        mg = Moongate(binary, conf, plan.log_level)
        if not mg.wait_ready():
            mg.stop()
            log = mg.log()
            err = next((l for l in log if "ERROR" in l or "error" in l.lower()), log[-1] if log else "no output")
            res.fails = ["moongate did not start: %s" % short(err, 500)]
            res.log_tail = log[-15:]
            return res
        plan.port = mg.addr[1]
        timeout = seconds(block.get("timeout"), 3.0)
        more = mgconf.subst(plan.more_headers, plan.port, plan.html_dir, root) if isinstance(
            plan.more_headers, str) else [mgconf.subst(x, plan.port, plan.html_dir, root) for x in plan.more_headers]
        responses = []
        if plan.requests and plan.requests[0][0] == "raw":
            data = mgconf.subst(plan.requests[0][1], plan.port, plan.html_dir, root)
            meth = (data.split(None, 1) or ["GET"])[0]
            responses = http_exchange(mg.addr, data.encode("utf-8", "surrogateescape"), [meth], timeout)
        elif plan.requests and plan.requests[0][0] == "pipelined":
            data = b""
            methods = []
            for i, (_, spec) in enumerate(plan.requests):
                mh = indexed(more, i, len(plan.requests))
                conn = "close" if i == len(plan.requests) - 1 else "keep-alive"
                b, meth = build_request(mgconf.subst(spec, plan.port, plan.html_dir, root), mh, conn)
                data += b
                methods.append(meth)
            responses = http_exchange(mg.addr, data, methods, timeout)
            while len(responses) < len(methods):
                r = Response()
                r.error = "no response"
                responses.append(r)
        else:
            for i, (_, spec) in enumerate(plan.requests):
                mh = indexed(more, i, len(plan.requests))
                if isinstance(mh, list):
                    mh = mh[0] if mh else ""
                data, meth = build_request(mgconf.subst(spec, plan.port, plan.html_dir, root), mh)
                responses.extend(http_exchange(mg.addr, data, [meth], timeout))
        time.sleep(max(0.05, seconds(block.get("wait"), 0.05)))
        mg.stop()
        log = mg.log()
        res.ok, res.fails, res.notes = check_block(block, plan, responses, log, mg.stdout)
        if not res.ok:
            res.log_tail = [l for l in log if " INFO " not in l][-12:]
    except Exception as e:  # a runner bug must not hide the other blocks
        res.ok = False
        res.fails = ["runner error: %r" % e]
    finally:
        if mg:
            try:
                mg.stop()
            except Exception as e:  # still remove the block's files
                res.notes.append("stopping moongate: %r" % e)
        res.secs = time.time() - t0
        if keep:
            res.notes.append("kept in %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return res


def expand_files(tests_dir, names):
    out = []
    for n in names:
        p = os.path.join(tests_dir, n)
        if os.path.isdir(p):
            out.extend(sorted(os.path.join(n, f) for f in os.listdir(p) if f.endswith(".t")))
        else:
            out.append(n)
    return sorted(out)


# -------------------------------------------------------------- categories

# A body check failing on moongate's JSON error page where the test expects
# nginx's HTML page for the same status.
JSON_PAGE = r"body: expected like '(?:\^)?(\d{3}) [A-Z][\w ]+'?, got '\{.*?status\\?\":\1\}"

# (category, regex over the failure lines and the log tail), most specific
# first; the first that matches names the failure's category.
SIGNATURES = [
    ("config rejected: lua.body_filter (body_filter_by_lua) not supported",
     r"did not start.*body_filter"),
    ("config rejected: [lua] init_worker (init_worker_by_lua) not supported",
     r"did not start.*init_worker"),
    ("Lua syntax error: moongate rejects the config at load, ngx_lua answers 500 at request time",
     r"did not start.*Lua syntax error"),
    ("config rejected: other", r"did not start"),
    ("ngx.location.capture / capture_multi missing",
     r"attempt to index field 'location'|location\.capture"),
    ("ngx.exec missing", r"field 'exec'"),
    ("ngx.thread (light threads) missing or different", r"field 'thread'|ngx\.thread"),
    ("ngx.on_abort / ngx.eof / ngx.send_headers / ngx.headers_sent missing",
     r"field '(on_abort|eof|send_headers|headers_sent|flush)'"),
    ("ngx.thread objects are not coroutines (coroutine.status on a thread)",
     r"bad argument #1 to 'status' \(coroutine expected\)"),
    ("numbers printed with 17 digits (ngx_lua prints %.14g)",
     r"body: expected .*\d\.\d{1,14}\b.*, got .*\d\.\d{15,}"),
    ("ngx.header[name] reads back nil for a header the script set (built-ins like Cache-Control, Link; case/underscore lookups)",
     lambda t: reads_back_nil(t)),
    ("Content-Length sent where ngx_lua streams chunked (header cleared or never set)",
     r"header content-length: expected absent|header Content-Length: expected absent"),
    ("ngx.resp.get_headers / ngx.req.get_headers limits (max_headers, \"truncated\")",
     r"truncated\\n|found \d+ (resp|req) headers"),
    ("print() writes to stdout, not the log (ngx_lua logs it at NOTICE)",
     r"print\(\) does not write to the log"),
    ("ngx.var[N]: captures of a regex location",
     r"^TEST \d+: get by-position capturing variables"),
    ("ngx.re: duplicate named groups / J option / result-table argument / nth out of bound (issue item 9)",
     r"^TEST \d+: (duplicate named|Javascript compatible|empty duplicate captures|extra table argument"
     r"|the 5th argument|specify the group)"),
    ("ngx.shared: list/scalar type errors (\"value is a list\", \"value not a list\")",
     r"value is a list|value not a list"),
    ("ngx.shared: memory accounting (no memory, forcible, abort at N, lpush into a full dict)",
     r"no memory|abort at|forcible|^TEST \d+: (lpush return nil|list removed)"),
    ("ngx.shared: type(dict) is a table; add/replace of nil is an error",
     r"type: table|add or replace nil"),
    ("ngx.send_headers does not run header_filter at once (ngx_lua runs it synchronously)",
     r"^TEST \d+: globals sharing by using _G \(header_filter_by_lua"),
    ("other ngx.* function missing", r"attempt to (call|index) field '\w+' \(a nil value\)"),
    ("header name/value with CR/LF rejected instead of escaped",
     r"failed to parse header value|invalid header name"),
    ("response header names: moongate sends them lowercased (raw header checks)",
     r"raw headers: .*\(matches ignoring case\)"),
    ("error page: moongate sends JSON, the test expects nginx's HTML page",
     JSON_PAGE),
]

FAMILIES = [
    (r"uthread", "ngx.thread (light threads): output, scheduling order, exit/exec/redirect from a thread"),
    (r"(034|036|037|038|047|120)-", "ngx.re (match/find/sub/gsub) results or errors"),
    (r"(043|145)-", "ngx.shared.DICT results or errors"),
    (r"016-|041-", "response headers (ngx.header, header_filter)"),
    (r"028-", "request headers (ngx.req.*)"),
    (r"062-", "ngx.* API surface (entry counts)"),
    (r"020-|subrequest", "subrequests"),
    (r"024-access", "access phase (ngx.exit/redirect/exec/sleep/uthread in access)"),
]


def reads_back_nil(text):
    """A body line `Name: nil` where the expected body has `Name: value`."""
    for m in re.finditer(r"body: expected '(.*?)', got '(.*?)'$", text, re.M):
        want = dict(re.findall(r"(?:^|\\n)([\w-]+): ([^\\]*)", m.group(1)))
        got = dict(re.findall(r"(?:^|\\n)([\w-]+): ([^\\]*)", m.group(2)))
        if any(got.get(k) == "nil" and v != "nil" for k, v in want.items()):
            return True
    return False


def categorize(res):
    text = "\n".join([res.name] + res.fails + res.log_tail)
    if "static location" in res.translations and re.search(
            r"status: expected (?!404)\d+, got 404", text) and "did not start" not in text:
        if not re.search(r"attempt to (call|index) field", text):
            return "output in rewrite/access does not end the request (ngx_lua finalizes it; moongate goes on to 404)"
    for name, rx in SIGNATURES:
        if rx(text) if callable(rx) else re.search(rx, text):
            return name
    for rx, name in FAMILIES:
        if re.search(rx, res.file):
            return name
    return "other"


def md_escape(s):
    return s.replace("|", "\\|").replace("\n", "\\n")


def passing_in_report(path):
    """{(file, test number)} of the "Passing blocks" section of an earlier report."""
    out = set()
    with open(path) as fh:
        text = fh.read()
    sec = text.split("## Passing blocks", 1)
    if len(sec) < 2:
        return out
    for m in re.finditer(r"^- (\S+): (.*)$", sec[1], re.M):
        for n in m.group(2).split(","):
            out.add((m.group(1), n.strip()))
    return out


def write_report(results, out, binary, files_order, elapsed, baseline=None):
    by_file = {}
    for r in results:
        by_file.setdefault(r.file, []).append(r)
    tot_blocks = len(results)
    portable = [r for r in results if r.portable]
    passed = [r for r in portable if r.ok]
    failed = [r for r in portable if not r.ok]
    L = []
    L.append("# lua-nginx-module v0.10.23 portable blocks against moongate")
    L.append("")
    L.append("Binary: `%s`; run %s UTC in %.0f s by `tools/ngx_lua_t/run.py` "
             "(what \"portable\" means: tools/ngx_lua_t/README.md)." % (
                 binary, time.strftime("%Y-%m-%d %H:%M", time.gmtime()), elapsed))
    L.append("")
    L.append("**Total: %d of %d portable blocks pass (%.1f %%); %d blocks in these files, %d not portable.**" % (
        len(passed), len(portable), 100.0 * len(passed) / max(1, len(portable)), tot_blocks,
        tot_blocks - len(portable)))
    core = [r for r in portable if r.core]
    core_ok = [r for r in core if r.ok]
    L.append("Core subset (portable blocks that need none of the runner's stand-ins below): "
             "**%d of %d pass (%.1f %%)**." % (
                 len(core_ok), len(core), 100.0 * len(core_ok) / max(1, len(core))))
    L.append("")
    tr = {}
    for r in portable:
        for t in r.translations:
            tr.setdefault(t, [0, 0])
            tr[t][0] += 1
            tr[t][1] += 1 if r.ok else 0
    if tr:
        L.append("Portable blocks that rely on one of the runner's stand-ins (README): " + "; ".join(
            "%s %d (%d pass)" % (k, v[0], v[1]) for k, v in sorted(tr.items())) + ".")
        L.append("")
    json_only = [r for r in failed if r.fails and all(
        re.search(JSON_PAGE, f) for f in r.fails)]
    if json_only:
        L.append("%d failing blocks fail only because the body is moongate's JSON error page where the test "
                 "expects nginx's HTML one (`Accept` absent, as Test::Nginx sends): %s." % (
                     len(json_only), ", ".join("%s #%s" % (os.path.basename(r.file), test_no(r.name)) for r in json_only)))
        L.append("")
    if baseline:
        before = passing_in_report(baseline)
        now = {(r.file, test_no(r.name)) for r in passed}
        gained = sorted(now - before)
        lost = sorted(before - now)
        L.append("Compared with `%s`: %d newly passing, %d no longer passing." % (baseline, len(gained), len(lost)))
        if lost:
            L.append("")
            L.append("No longer passing: " + ", ".join("%s #%s" % x for x in lost))
        if gained:
            L.append("")
            L.append("Newly passing: " + ", ".join("%s #%s" % x for x in gained))
        L.append("")
    # categories
    cats = {}
    for r in failed:
        r.category = categorize(r)
        cats.setdefault(r.category, []).append(r)
    L.append("## Failure categories")
    L.append("")
    L.append("| category | failures | examples |")
    L.append("| --- | ---: | --- |")
    for name, rs in sorted(cats.items(), key=lambda kv: -len(kv[1])):
        ex = ", ".join("%s #%s" % (os.path.basename(r.file), test_no(r.name)) for r in rs[:6])
        L.append("| %s | %d | %s |" % (name, len(rs), ex))
    L.append("")
    L.append("## Per file")
    L.append("")
    L.append("| file | blocks | portable | pass | fail | pass % | core | core pass |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for f in files_order:
        rs = by_file.get(f, [])
        p = [r for r in rs if r.portable]
        ok = [r for r in p if r.ok]
        c = [r for r in p if r.core]
        cok = [r for r in c if r.ok]
        L.append("| %s | %d | %d | %d | %d | %s | %d | %d |" % (
            f, len(rs), len(p), len(ok), len(p) - len(ok),
            "%.0f" % (100.0 * len(ok) / len(p)) if p else "-", len(c), len(cok)))
    L.append("| **total** | %d | %d | %d | %d | %.0f | %d | %d |" % (
        tot_blocks, len(portable), len(passed), len(failed),
        100.0 * len(passed) / max(1, len(portable)), len(core), len(core_ok)))
    L.append("")
    L.append("## Failures")
    L.append("")
    for f in files_order:
        rs = [r for r in by_file.get(f, []) if r.portable and not r.ok]
        if not rs:
            continue
        L.append("### %s" % f)
        L.append("")
        for r in rs:
            L.append("- **%s** (line %d) — _%s_" % (md_escape(r.name), r.line, r.category))
            for x in r.fails[:6]:
                L.append("  - %s" % md_escape(x))
            if r.log_tail:
                tail = [re.sub(r"^\S+Z\s+", "", l) for l in r.log_tail if "moongate ready" not in l][-4:]
                for l in tail:
                    L.append("  - log: `%s`" % md_escape(l[:300]).replace("`", "'"))
        L.append("")
    L.append("## Not portable: reasons")
    L.append("")
    reasons = {}
    for r in results:
        if not r.portable:
            reasons.setdefault(r.reason, []).append(r)
    L.append("| reason | blocks |")
    L.append("| --- | ---: |")
    for reason, rs in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
        L.append("| %s | %d |" % (md_escape(reason), len(rs)))
    L.append("")
    L.append("## Passing blocks")
    L.append("")
    for f in files_order:
        rs = [r for r in by_file.get(f, []) if r.portable and r.ok]
        if rs:
            L.append("- %s: %s" % (f, ", ".join(test_no(r.name) for r in rs)))
    L.append("")
    with open(out, "w") as fh:
        fh.write("\n".join(L))


def test_no(name):
    m = re.match(r"TEST (\d+)", name)
    return m.group(1) if m else name[:20]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moongate", required=True, help="the moongate binary")
    ap.add_argument("--tests", default="/work/ext/lua-nginx-module/t", help="lua-nginx-module's t/ directory")
    ap.add_argument("--out", help="Markdown report path")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="blocks run at once (default 2)")
    ap.add_argument("--only", help="run only blocks whose 'TEST N' number or name matches this regex")
    ap.add_argument("--keep", action="store_true", help="keep each block's temp conf.d")
    ap.add_argument("--list", action="store_true", help="only list portability decisions, run nothing")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("files", nargs="*", help="test files or dirs relative to --tests (default: issue 13's list)")
    ap.add_argument("--json", metavar="PATH", help="also write every block's result as JSON")
    ap.add_argument("--compare", metavar="OLD.md", help="an earlier report: list blocks newly passing / no longer passing")
    ap.add_argument("--time-budget", default="1s",
                    help="[lua] time_budget for every block (ngx_lua has none; default 1s, '' = moongate's default)")
    a = ap.parse_args()
    global TIME_BUDGET
    TIME_BUDGET = a.time_budget
    files = expand_files(a.tests, a.files or ACCEPTANCE)
    binary = os.path.abspath(a.moongate)
    jobs = []
    for f in files:
        tf = tparse.parse_file(os.path.join(a.tests, f))
        tf.path = f
        for b in tf.blocks:
            if a.only and not re.search(a.only, b.name):
                continue
            jobs.append((tf, b))
    t0 = time.time()
    results = []
    if a.list:
        for tf, b in jobs:
            try:
                translate.plan_block(tf, b)
                print("%s: %s: portable" % (tf.path, b.name))
            except translate.NotPortable as e:
                print("%s: %s: NOT portable: %s" % (tf.path, b.name, e))
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        futs = [ex.submit(run_block, binary, tf, b, a.keep) for tf, b in jobs]
        for fut in futs:
            r = fut.result()
            results.append(r)
            if a.verbose or (r.portable and not r.ok and a.only):
                status = "SKIP (%s)" % r.reason if not r.portable else ("ok" if r.ok else "FAIL")
                print("%s: %s: %s" % (r.file, r.name, status), flush=True)
                if r.portable and not r.ok:
                    for x in r.fails:
                        print("    " + x)
                    for l in r.log_tail[-6:]:
                        print("    log: " + l)
                for nt in r.notes:
                    print("    note: " + nt)
    elapsed = time.time() - t0
    portable = [r for r in results if r.portable]
    ok = [r for r in portable if r.ok]
    core = [r for r in portable if r.core]
    print("%d of %d portable blocks pass (core subset: %d of %d; %d blocks, %.0f s)" % (
        len(ok), len(portable), len([r for r in core if r.ok]), len(core), len(results), elapsed))
    if a.out:
        write_report(results, a.out, binary, files, elapsed, a.compare)
        print("report: %s" % a.out)
    if a.json:
        import json

        with open(a.json, "w") as fh:
            json.dump([{
                "file": r.file, "test": r.name, "line": r.line, "portable": r.portable,
                "reason": r.reason, "pass": r.ok if r.portable else None, "core": r.core,
                "category": categorize(r) if r.portable and not r.ok else None,
                "failures": r.fails, "notes": r.notes, "stand_ins": r.translations,
            } for r in results], fh, indent=1)
        print("json: %s" % a.json)
    sys.exit(0)


if __name__ == "__main__":
    main()
