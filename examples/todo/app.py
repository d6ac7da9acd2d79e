#!/usr/bin/env python3
"""A todo list as a JSON API, with python3's standard library only.

Run behind moongate as a managed pool (conf.d/10-todo.toml) or alone:

    python3 examples/todo/app.py --port 8001 --db var/todo.db
    python3 examples/todo/app.py --unix /tmp/todo.sock

or under a WSGI server: `application` below (examples/todo/uwsgi.toml runs
it under uWSGI, spoken to over the uwsgi protocol).

Several processes may share one database file: SQLite runs in WAL mode with
a busy timeout, so readers never wait and writers queue for a moment.

    GET    /healthz                 {"ok": true, "pid": ..., "worker": ...}
    GET    /todos?start=N           newest first, 20 a page: {"todos": [...], "next": N|null}
    POST   /todos                   {"title": "..."} -> 201 and the todo
    GET    /todos/ID                the todo
    PATCH  /todos/ID                {"done": true} and/or {"title": "..."} -> the todo
    DELETE /todos/ID                204

Errors are JSON too: {"error": "..."} with 400, 404, 405 (and Allow),
411 or 413. Lists and single todos may be cached for 2 seconds
(Cache-Control: public, max-age=2); writes and errors say no-store.
"""

import argparse
import json
import os
import signal
import socketserver
import sqlite3
import sys
import threading
import time
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

PAGE = 20
MAX_TITLE = 200
MAX_BODY = 64 * 1024
LIST_CACHE = "public, max-age=2"

SCHEMA = """
CREATE TABLE IF NOT EXISTS todos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    done_at TEXT
)
"""


class HttpError(Exception):
    """An answer other than success: status, message and extra headers."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Store:
    """The todos in one SQLite file; one connection per thread."""

    def __init__(self, path):
        self.path = path
        self.local = threading.local()
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        db = self.db()
        # Persistent in the file: every process after the first finds it set.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(SCHEMA)

    def db(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            # Autocommit (isolation_level=None): each statement is its own
            # transaction and waits up to 5 s for another writer's lock.
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 5000")
            self.local.conn = conn
        return conn

    def page(self, start):
        rows = self.db().execute(
            "SELECT * FROM todos ORDER BY id DESC LIMIT ? OFFSET ?",
            (PAGE + 1, start),
        ).fetchall()
        more = len(rows) > PAGE
        return [todo(r) for r in rows[:PAGE]], (start + PAGE if more else None)

    def get(self, ident):
        row = self.db().execute("SELECT * FROM todos WHERE id = ?", (ident,)).fetchone()
        if row is None:
            raise HttpError(404, f"no todo {ident}")
        return todo(row)

    def add(self, title):
        cur = self.db().execute(
            "INSERT INTO todos (title, created_at) VALUES (?, ?)", (title, now())
        )
        return self.get(cur.lastrowid)

    def update(self, ident, title, done):
        sets, args = [], []
        if title is not None:
            sets.append("title = ?")
            args.append(title)
        if done is not None:
            sets.append("done = ?")
            args.append(1 if done else 0)
            # Keeps the first finishing time; cleared when reopened.
            sets.append("done_at = CASE WHEN ? THEN COALESCE(done_at, ?) ELSE NULL END")
            args.extend([1 if done else 0, now()])
        cur = self.db().execute(
            f"UPDATE todos SET {', '.join(sets)} WHERE id = ?", (*args, ident)
        )
        if cur.rowcount == 0:
            raise HttpError(404, f"no todo {ident}")
        return self.get(ident)

    def delete(self, ident):
        cur = self.db().execute("DELETE FROM todos WHERE id = ?", (ident,))
        if cur.rowcount == 0:
            raise HttpError(404, f"no todo {ident}")


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def todo(row):
    return {
        "id": row["id"],
        "title": row["title"],
        "done": bool(row["done"]),
        "created_at": row["created_at"],
        "done_at": row["done_at"],
    }


def title_of(value):
    if not isinstance(value, str) or not value.strip():
        raise HttpError(400, '"title" must be a non-empty string')
    value = value.strip()
    if len(value) > MAX_TITLE:
        raise HttpError(400, f'"title" is longer than {MAX_TITLE} characters')
    return value


class Handler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 keep-alive, Content-Length on every answer."""

    protocol_version = "HTTP/1.1"
    server_version = "todo"
    # Longer than moongate's pooled keep-alive (60 s by default), so moongate
    # closes idle connections first and never reuses one closed under it.
    timeout = 300

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def dispatch(self, method):
        self.server.begin()
        try:
            answer = outcome(self.server.store, method, self.path, self.read_body, self.log_error)
            self.answer(method, *answer)
        finally:
            self.server.end()

    def read_body(self):
        """The whole request body (Content-Length or chunked), bounded."""
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked:
            body = bytearray()
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise HttpError(400, "bad chunked body")
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass  # trailers
                    return bytes(body)
                if len(body) + size > MAX_BODY:
                    self.close_connection = True
                    raise HttpError(413, f"the body is larger than {MAX_BODY} bytes")
                body += self.rfile.read(size)
                self.rfile.readline(1024)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            length = int(length)
        except ValueError:
            self.close_connection = True
            raise HttpError(400, "bad Content-Length")
        if length > MAX_BODY:
            # Not read: the connection cannot be reused.
            self.close_connection = True
            raise HttpError(413, f"the body is larger than {MAX_BODY} bytes")
        return self.rfile.read(length)

    def answer(self, method, status, payload, headers):
        data = b"" if payload is None else json.dumps(payload).encode() + b"\n"
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        if self.server.stopping.is_set():
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if data and method != "HEAD":
            self.wfile.write(data)

    def version_string(self):
        return self.server_version

    def address_string(self):
        # Unix socket peers have no address.
        return self.client_address[0] if self.client_address else "unix"

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def log_request(self, code="-", size="-"):
        if self.server.access_log:
            super().log_request(code, size)


def outcome(store, method, target, read_body, log_error):
    """(status, JSON payload or None, headers) for one request; `read_body()`
    gives its body or raises HttpError."""
    try:
        status, payload, cache = route(store, method, target, read_body())
        return status, payload, {"Cache-Control": cache}
    except HttpError as e:
        return e.status, {"error": e.message}, {"Cache-Control": "no-store", **e.headers}
    except sqlite3.Error as e:
        log_error("database: %s", e)
        payload = {"error": "the database is busy, try again"}
        return 503, payload, {"Cache-Control": "no-store", "Retry-After": "1"}


def route(store, method, target, body):
    """Answers `method` on `target` (path and query) with the request `body`:
    (status, JSON payload or None, Cache-Control). Shared by the HTTP server
    and the WSGI entry point."""
    url = urlsplit(target)
    parts = [p for p in url.path.split("/") if p]
    if parts == ["healthz"]:
        allow(method, "GET, HEAD")
        worker = os.environ.get("MOONGATE_WORKER")
        return 200, {"ok": True, "pid": os.getpid(), "worker": worker}, "no-store"
    if parts == ["todos"]:
        allow(method, "GET, HEAD, POST")
        if method == "POST":
            return 201, store.add(title_of(json_object(body).get("title"))), "no-store"
        todos, following = store.page(start_of(url.query))
        return 200, {"todos": todos, "next": following}, LIST_CACHE
    if len(parts) == 2 and parts[0] == "todos":
        ident = id_of(parts[1])
        allow(method, "GET, HEAD, PATCH, DELETE")
        if method == "PATCH":
            fields = json_object(body)
            title = title_of(fields["title"]) if "title" in fields else None
            done = fields.get("done")
            if done is not None and not isinstance(done, bool):
                raise HttpError(400, '"done" must be true or false')
            if title is None and done is None:
                raise HttpError(400, 'give "done" (true or false) and/or "title"')
            return 200, store.update(ident, title, done), "no-store"
        if method == "DELETE":
            store.delete(ident)
            return 204, None, "no-store"
        return 200, store.get(ident), LIST_CACHE
    raise HttpError(404, f"nothing at {url.path}")


def allow(method, allowed):
    if method not in [m.strip() for m in allowed.split(",")]:
        raise HttpError(405, f"{method} is not allowed here", {"Allow": allowed})


def json_object(body):
    try:
        value = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body is not valid JSON")
    if not isinstance(value, dict):
        raise HttpError(400, "the body must be a JSON object")
    return value


def start_of(query):
    values = parse_qs(query).get("start", ["0"])
    try:
        start = int(values[0])
    except ValueError:
        raise HttpError(400, "start must be a whole number")
    if start < 0:
        raise HttpError(400, "start must not be negative")
    return start


def id_of(text):
    if not text.isdigit():
        raise HttpError(404, f"no todo {text}")
    return int(text)


class Serving:
    """What both server kinds share: the store and the in-flight count."""

    daemon_threads = True  # idle keep-alive connections don't hold up exit
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 refuses bursts of connections

    def setup_app(self, store, access_log):
        self.store = store
        self.access_log = access_log
        self.stopping = threading.Event()
        self.inflight = 0
        self.idle = threading.Condition()

    def handle_error(self, request, client_address):
        # A client (or moongate) that went away mid-answer is not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def begin(self):
        with self.idle:
            self.inflight += 1

    def end(self):
        with self.idle:
            self.inflight -= 1
            self.idle.notify_all()

    def drain(self, timeout):
        """Waits until no request is in flight (at most `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        with self.idle:
            while self.inflight > 0 and time.monotonic() < deadline:
                self.idle.wait(deadline - time.monotonic())


class UnixServer(Serving, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    pass


class TcpServer(Serving, socketserver.ThreadingMixIn, socketserver.TCPServer):
    pass


WSGI_STORE = []
WSGI_STORE_LOCK = threading.Lock()


def application(environ, start_response):
    """The same API under a WSGI server, e.g. uWSGI speaking its own protocol
    to moongate (`uwsgi --plugin python3 --socket ... --wsgi-file app.py`);
    the data file is $TODO_DB or var/todo.db."""
    with WSGI_STORE_LOCK:
        if not WSGI_STORE:
            WSGI_STORE.append(Store(os.environ.get("TODO_DB", "var/todo.db")))
    method = environ["REQUEST_METHOD"]
    target = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")

    def read_body():
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise HttpError(400, "bad Content-Length")
        if length > MAX_BODY:
            raise HttpError(413, f"the body is larger than {MAX_BODY} bytes")
        return environ["wsgi.input"].read(length) if length > 0 else b""

    def log_error(fmt, *args):
        sys.stderr.write(f"todo: {fmt % args}\n")

    status, payload, headers = outcome(WSGI_STORE[0], method, target, read_body, log_error)
    data = b"" if payload is None else json.dumps(payload).encode() + b"\n"
    fields = [(name, value) for name, value in headers.items()]
    if payload is not None:
        fields.append(("Content-Type", "application/json"))
    if status != 204:
        fields.append(("Content-Length", str(len(data))))
    start_response(f"{status} {HTTPStatus(status).phrase}", fields)
    return [b"" if method == "HEAD" else data]


def main():
    parser = argparse.ArgumentParser(description="A todo JSON API on SQLite.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="PATH", help="listen on this unix socket")
    where.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT")
    parser.add_argument(
        "--db",
        default=os.environ.get("TODO_DB", "var/todo.db"),
        help="the SQLite file, created on first use (default: $TODO_DB or var/todo.db)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args()

    store = Store(args.db)
    if args.unix:
        if os.path.exists(args.unix):
            os.unlink(args.unix)  # a socket left by a killed process
        server = UnixServer(args.unix, Handler)
        where = f"unix:{args.unix}"
    else:
        server = TcpServer(("127.0.0.1", args.port), Handler)
        where = "http://127.0.0.1:%d" % server.server_address[1]
    server.setup_app(store, args.access_log)

    def stop(signum, _frame):
        # shutdown() waits for serve_forever(), which runs in this thread.
        server.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"todo: listening on {where}, data in {args.db}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.drain(10.0)
        server.server_close()
        if args.unix and os.path.exists(args.unix):
            try:
                os.unlink(args.unix)
            except OSError:
                pass
    print("todo: stopped", flush=True)


if __name__ == "__main__":
    main()
