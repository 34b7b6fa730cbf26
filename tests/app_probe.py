"""Import generated apps one after another in one interpreter and ask each for its API
documents; run with the Python of an environment that has the generated project's
runtime dependencies (the `database=none` lock).

Reads one backend directory per line on standard input; answers each with one JSON line
on standard output: the status and body of GET /openapi.json and of GET /docs, or the
traceback of the failure. The apps' own output goes to standard error.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import traceback
from typing import Any

PATHS = ("/openapi.json", "/docs")


async def get(app: Any, path: str) -> dict[str, Any]:
    """One GET request through the ASGI interface, as a server would send it."""
    response: dict[str, Any] = {"status": None, "body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
        elif message["type"] == "http.response.body":
            response["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    await app(scope, receive, send)
    return {"status": response["status"], "body": response["body"].decode()}


def probe(backend: str) -> dict[str, Any]:
    for name in [name for name in sys.modules if name == "app" or name.startswith("app.")]:
        del sys.modules[name]
    sys.path.insert(0, backend)
    try:
        app = importlib.import_module("app.main").app
        return {path: asyncio.run(get(app, path)) for path in PATHS}
    except Exception:  # the test shows any failure of the app
        return {"error": traceback.format_exc()}
    finally:
        sys.path.remove(backend)


def main() -> None:
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in sys.stdin:
        answers.write(json.dumps(probe(line.rstrip("\n"))) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
