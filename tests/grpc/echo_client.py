#!/usr/bin/env python3
"""A command-line gRPC client for echo.Echo (examples/grpc/echo_server.py),
used by moongate's tests: one call (or N parallel ones), one JSON line out.

    python3 tests/grpc/echo_client.py TARGET METHOD
        [--tls-ca FILE] [--authority NAME] [--metadata KEY=VALUE ...]
        [--timeout SECS] [--payload STR | --payload-size N]
        [--messages a,b,c] [--repeat N] [--parallel N] [--no-responses]

TARGET is host:port (127.0.0.1:8080). METHOD is a method of echo.Echo
(Unary, ServerStream, ClientStream, Bidi, Fail, Slow, Whoami, Metadata) or a
full path (/pkg.Service/Method, called as unary). Messages are raw bytes (no
protobuf).

  --tls-ca FILE     TLS (ALPN h2) trusting the PEM roots in FILE; without it,
                    h2c with prior knowledge
  --authority NAME  :authority sent, and with --tls-ca the name the
                    certificate must match (grpc.ssl_target_name_override)
  --metadata K=V    request metadata (repeatable); a key ending in -bin takes
                    base64
  --timeout SECS    the call's deadline, sent as grpc-timeout (default 30;
                    0 = no deadline)
  --payload STR     the request of a unary or server-streaming call (default
                    "hello"); --payload-size N sends N bytes of "x" instead
  --messages a,b,c  the requests of ClientStream and Bidi (default a,b,c),
                    the list sent --repeat times (default 1). Bidi sends
                    message k+1 only after the answer to message k arrived
  --parallel N      N concurrent calls of METHOD on one channel (unary
                    methods only): prints a summary instead (see below)
  --no-responses    leave the responses out of the JSON (counts stay)

One call prints:

  {"code": "OK", "code_num": 0, "details": "", "responses": ["hello"],
   "response_count": 1, "response_bytes": 5, "initial_metadata": {...},
   "trailing_metadata": {"x-trailer": "done"}, "seconds": 0.004}

Bidi adds "interleaved": true when every answer came before the next
message was sent (always, unless the call failed half-way). --parallel N
prints:

  {"parallel": N, "codes": {"OK": N}, "code_list": [...], "details": [...],
   "distinct_responses": [...], "distinct_count": n, "seconds": 0.1}

(code_list and details per call, in call order; distinct_responses sorted:
with Whoami, one per upstream connection).

Metadata values are strings (a key sent more than once: a list; -bin values
base64). Response bytes are decoded as UTF-8 (invalid bytes escaped). The
exit status is 0 whatever the call's status (the JSON says it); non-zero
only if the client itself failed (bad arguments, a crash).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time

import grpc

SERVICE = "echo.Echo"
UNARY_STREAM = {"ServerStream"}
STREAM_UNARY = {"ClientStream"}
STREAM_STREAM = {"Bidi"}


def metadata_dict(md) -> dict:
    """grpc metadata (key, value) pairs -> {key: str | [str, ...]}."""
    out: dict = {}
    for key, value in md or ():
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        if key in out:
            prev = out[key]
            out[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            out[key] = value
    return out


def decode(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def parse_metadata(items: list[str]) -> list[tuple[str, str | bytes]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"echo_client: --metadata wants KEY=VALUE, got {item!r}")
        key = key.lower()
        out.append((key, base64.b64decode(value) if key.endswith("-bin") else value))
    return out


def make_channel(args) -> grpc.Channel:
    options = [
        ("grpc.enable_http_proxy", 0),          # loopback only, whatever http_proxy says
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
    ]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    if args.tls_ca:
        with open(args.tls_ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        if args.authority:
            options.append(("grpc.ssl_target_name_override", args.authority))
        return grpc.secure_channel(args.target, creds, options=options)
    return grpc.insecure_channel(args.target, options=options)


def method_path(method: str) -> str:
    return method if method.startswith("/") else f"/{SERVICE}/{method}"


def status_fields(code: grpc.StatusCode | None, details: str | None) -> dict:
    code = code or grpc.StatusCode.UNKNOWN
    return {"code": code.name, "code_num": code.value[0], "details": details or ""}


def result(call, responses: list[bytes], code, details, args, t0: float, extra=None) -> dict:
    out = status_fields(code, details)
    if not args.no_responses:
        out["responses"] = [decode(r) for r in responses]
    out["response_count"] = len(responses)
    out["response_bytes"] = sum(len(r) for r in responses)
    initial = trailing = None
    if call is not None:
        try:
            initial = call.initial_metadata()
            trailing = call.trailing_metadata()
        except Exception:                       # no metadata when the call never started
            pass
    out["initial_metadata"] = metadata_dict(initial)
    out["trailing_metadata"] = metadata_dict(trailing)
    out["seconds"] = round(time.monotonic() - t0, 4)
    if extra:
        out.update(extra)
    return out


def call_unary(channel, args, md, timeout) -> dict:
    t0 = time.monotonic()
    stub = channel.unary_unary(method_path(args.method))
    try:
        response, call = stub.with_call(args.request, metadata=md, timeout=timeout)
        return result(call, [response], call.code(), call.details(), args, t0)
    except grpc.RpcError as e:
        return result(e, [], e.code(), e.details(), args, t0)


def call_server_stream(channel, args, md, timeout) -> dict:
    t0 = time.monotonic()
    call = channel.unary_stream(method_path(args.method))(args.request, metadata=md, timeout=timeout)
    responses = []
    try:
        for r in call:
            responses.append(r)
    except grpc.RpcError:
        pass
    return result(call, responses, call.code(), call.details(), args, t0)


def call_client_stream(channel, args, md, timeout) -> dict:
    t0 = time.monotonic()
    stub = channel.stream_unary(method_path(args.method))
    try:
        response, call = stub.with_call(iter(args.message_list), metadata=md, timeout=timeout)
        return result(call, [response], call.code(), call.details(), args, t0)
    except grpc.RpcError as e:
        return result(e, [], e.code(), e.details(), args, t0)


def call_bidi(channel, args, md, timeout) -> dict:
    """Sends message k+1 only once the answer to message k arrived."""
    t0 = time.monotonic()
    answered = threading.Semaphore(0)
    done = threading.Event()
    state = {"sent": 0, "interleaved": True}

    def requests():
        for i, message in enumerate(args.message_list):
            if i > 0:
                # wait for the previous answer (the call's deadline or its end
                # stops the wait: done is set then)
                while not answered.acquire(timeout=0.05):
                    if done.is_set():
                        return
            state["sent"] += 1
            yield message

    call = channel.stream_stream(method_path(args.method))(requests(), metadata=md, timeout=timeout)
    responses = []
    try:
        for r in call:
            responses.append(r)
            if len(responses) != state["sent"]:
                state["interleaved"] = False   # an answer to a message not yet sent, or late
            answered.release()
    except grpc.RpcError:
        pass
    finally:
        done.set()
    if len(responses) != len(args.message_list):
        state["interleaved"] = False
    return result(call, responses, call.code(), call.details(), args, t0,
                  {"interleaved": state["interleaved"]})


def call_parallel(channel, args, md, timeout) -> dict:
    if args.method in UNARY_STREAM | STREAM_UNARY | STREAM_STREAM:
        raise SystemExit("echo_client: --parallel takes a unary method")
    t0 = time.monotonic()
    stub = channel.unary_unary(method_path(args.method))
    futures = [stub.future(args.request, metadata=md, timeout=timeout) for _ in range(args.parallel)]
    codes, details, responses = [], [], []
    for f in futures:
        try:
            responses.append(decode(f.result()))
            codes.append("OK")
            details.append("")
        except grpc.RpcError as e:
            code = e.code() or grpc.StatusCode.UNKNOWN
            codes.append(code.name)
            details.append(e.details() or "")
    counts: dict[str, int] = {}
    for c in codes:
        counts[c] = counts.get(c, 0) + 1
    distinct = sorted(set(responses))
    return {"parallel": args.parallel, "codes": counts, "code_list": codes, "details": details,
            "distinct_responses": distinct, "distinct_count": len(distinct),
            "seconds": round(time.monotonic() - t0, 4)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="gRPC client for echo.Echo: one JSON line out",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="host:port")
    p.add_argument("method", help="Unary, ServerStream, ClientStream, Bidi, Fail, Slow, Whoami, "
                                  "Metadata, or /pkg.Service/Method")
    p.add_argument("--tls-ca", help="PEM roots: TLS instead of h2c")
    p.add_argument("--authority", help=":authority, and the TLS name to verify")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds (0 = no deadline)")
    p.add_argument("--payload", default="hello")
    p.add_argument("--payload-size", type=int, help="send this many bytes of 'x' as the payload")
    p.add_argument("--messages", default="a,b,c", help="comma-separated stream messages")
    p.add_argument("--repeat", type=int, default=1, help="send the --messages list this many times")
    p.add_argument("--parallel", type=int, default=0, help="N concurrent unary calls")
    p.add_argument("--no-responses", action="store_true", help="omit the responses list")
    args = p.parse_args(argv)
    args.request = (b"x" * args.payload_size if args.payload_size is not None
                    else args.payload.encode())
    args.message_list = [m.encode() for m in args.messages.split(",")] * max(args.repeat, 0)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    md = parse_metadata(args.metadata)
    timeout = args.timeout if args.timeout > 0 else None
    with make_channel(args) as channel:
        if args.parallel > 0:
            out = call_parallel(channel, args, md, timeout)
        elif args.method in UNARY_STREAM:
            out = call_server_stream(channel, args, md, timeout)
        elif args.method in STREAM_UNARY:
            out = call_client_stream(channel, args, md, timeout)
        elif args.method in STREAM_STREAM:
            out = call_bidi(channel, args, md, timeout)
        else:
            out = call_unary(channel, args, md, timeout)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
