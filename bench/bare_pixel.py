"""The floor of the tracking benchmark: a raw ASGI callable that answers every request with
mailer's open pixel (the same 43-byte GIF and no-cache headers), with no framework, no token
check and no recording, served by uvicorn exactly as `mailer serve` serves mailer's app.

    .venv/bin/python bench/bare_pixel.py --port 8026
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import uvicorn

from mailer.tracking.recipient import PIXEL, PIXEL_HEADERS
from mailer.tracking.serve import OPTIONS, serve_until_signalled


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": PIXEL_HEADERS})
    await send({"type": "http.response.body", "body": PIXEL})


def config(host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, **OPTIONS)


def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or Ctrl-C, as mailer.tracking.serve does."""
    serve_until_signalled(config(host, port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8026)
    arguments = parser.parse_args(argv)
    serve(arguments.host, arguments.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
