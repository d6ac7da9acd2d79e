"""A small Flask app for moongate's managed workers, run under gunicorn.

    GET  /          {"hello": "flask", "pid": ..., "master": ..., "worker": ...}
    POST /echo      the JSON body back, with the pid that answered
    GET  /healthz   {"ok": true}

`master` is gunicorn's master (the process moongate started), `worker`
the moongate slot id (MOONGATE_WORKER), `pid` gunicorn's worker process.
"""

import os

from flask import Flask, jsonify, request

app = Flask(__name__)


def who():
    return {
        "pid": os.getpid(),
        "master": os.getppid(),
        "worker": os.environ.get("MOONGATE_WORKER"),
    }


@app.get("/")
def hello():
    return jsonify(hello="flask", **who())


@app.post("/echo")
def echo():
    body = request.get_json(silent=True)
    if body is None:
        return jsonify(error="send a JSON body"), 400
    return jsonify(you_sent=body, **who())


@app.get("/healthz")
def healthz():
    return jsonify(ok=True)
