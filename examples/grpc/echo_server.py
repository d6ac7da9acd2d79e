#!/usr/bin/env python3
"""A gRPC echo service, `echo.Echo`, for moongate's example and tests.

    python3 examples/grpc/echo_server.py [--host 127.0.0.1] [--port 0]
                                         [--max-concurrent-streams N]
                                         [--tls-cert FILE --tls-key FILE]

grpcio's asyncio server with a generic handler: messages are raw bytes (no
protobuf, no .proto to compile), so any client that frames bytes as gRPC
messages can call it (tests/grpc/echo_client.py, h2load with a framed body).
--port 0 picks a free port. The first line on stdout, flushed once the server
accepts calls, is `PORT <n>`. With --tls-cert and --tls-key (PEM) it serves
TLS (ALPN h2) instead of h2c with prior knowledge. SIGTERM or SIGINT stops it (calls in flight get
a second to finish) and it exits with status 0.

Methods (path /echo.Echo/<Method>):

  Unary         answers the request bytes; sends back every request metadata
                key that starts with `x-` as initial metadata `echo-<key>`
                (same value), and trailing metadata `x-trailer: done`
  ServerStream  request "N:PAYLOAD" (ASCII) -> N responses, each PAYLOAD
                (0 <= N <= 10000)
  ClientStream  reads every request message -> one answer
                "count=<messages> bytes=<total bytes>"
  Bidi          answers each message with itself as soon as it arrives (a
                client that waits for each answer before sending the next
                gets them one by one)
  Fail          request "CODE:message" -> aborts with that status code
                number (1..16) and message
  Slow          request "<milliseconds>" -> sleeps that long, answers "slept"
  Whoami        answers the caller's address as grpcio reports it
                (context.peer(), e.g. "ipv4:127.0.0.1:40312"): behind a
                proxy, each distinct answer is one upstream connection. A
                request "<milliseconds>" waits that long first, so that
                parallel calls are all in flight at once (anything else:
                no wait)
  Metadata      answers the request metadata as a JSON object (key -> list of
                values; -bin values base64), e.g. to see what a proxy added

A request that does not parse (Fail, ServerStream, Slow) is answered with
INVALID_ARGUMENT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys

import grpc

SERVICE = "echo.Echo"
MAX_STREAM_MESSAGES = 10000
CODES = {code.value[0]: code for code in grpc.StatusCode}


def _text(request: bytes) -> str:
    return request.decode("ascii", "replace")


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    echoed = tuple((f"echo-{key}", value) for key, value in context.invocation_metadata()
                   if key.startswith("x-"))
    await context.send_initial_metadata(echoed)
    context.set_trailing_metadata((("x-trailer", "done"),))
    return request


async def server_stream(request: bytes, context: grpc.aio.ServicerContext):
    count, sep, payload = request.partition(b":")
    try:
        n = int(count) if sep else -1
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_STREAM_MESSAGES:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"want N:PAYLOAD with 0 <= N <= {MAX_STREAM_MESSAGES}")
    for _ in range(n):
        yield payload


async def client_stream(requests, context: grpc.aio.ServicerContext) -> bytes:
    count = total = 0
    async for message in requests:
        count += 1
        total += len(message)
    return f"count={count} bytes={total}".encode()


async def bidi(requests, context: grpc.aio.ServicerContext):
    async for message in requests:
        yield message


async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    code, sep, message = _text(request).partition(":")
    status = CODES.get(int(code)) if sep and code.isdigit() else None
    if status is None or status is grpc.StatusCode.OK:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "want CODE:message with CODE 1..16")
    await context.abort(status, message)
    return b""   # not reached: abort raises


async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    text = _text(request).strip()
    if not text.isdigit():
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "want a number of milliseconds")
    await asyncio.sleep(int(text) / 1000)
    return b"slept"


async def whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    text = _text(request).strip()
    if text.isdigit():
        await asyncio.sleep(int(text) / 1000)
    return context.peer().encode()


async def metadata(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    out: dict[str, list[str]] = {}
    for key, value in context.invocation_metadata():
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        out.setdefault(key, []).append(value)
    return json.dumps(out, sort_keys=True).encode()


def handler() -> grpc.GenericRpcHandler:
    """echo.Echo's methods; no (de)serializers, so messages stay bytes."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Whoami": grpc.unary_unary_rpc_method_handler(whoami),
        "Metadata": grpc.unary_unary_rpc_method_handler(metadata),
    })


async def serve(args) -> None:
    options = [
        ("grpc.so_reuseport", 0),               # a second server on a taken port must fail
        ("grpc.max_receive_message_length", -1),  # large messages are the tests' business
        ("grpc.max_send_message_length", -1),
    ]
    if args.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", args.max_concurrent_streams))
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((handler(),))
    host = f"[{args.host}]" if ":" in args.host else args.host
    try:
        if args.tls_cert:
            with open(args.tls_cert, "rb") as c, open(args.tls_key, "rb") as k:
                creds = grpc.ssl_server_credentials([(k.read(), c.read())])
            port = server.add_secure_port(f"{host}:{args.port}", creds)
        else:
            port = server.add_insecure_port(f"{host}:{args.port}")
    except RuntimeError:                        # grpcio >= 1.50 raises, older ones return 0
        port = 0
    if port == 0:
        raise SystemExit(f"echo_server: cannot listen on {host}:{args.port} (address in use?)")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"PORT {port}", flush=True)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    p = argparse.ArgumentParser(description="gRPC echo.Echo service (raw bytes messages)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--max-concurrent-streams", type=int, default=0,
                   help="HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS announced to clients")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = p.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    asyncio.run(serve(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
