"""The do-nothing baseline for bench/throughput.py: the same stack as `webhook serve`, without the webhook.

    .venv/bin/python bench/baseline_app.py --port 9443 --cert-dir /tmp/certs

FastAPI under uvicorn with the server's TLS setup (`webhook.certs.ensure_self_signed` for the files,
`webhook.certs.uvicorn_tls_context` as `ssl_context_factory`), uvloop and httptools, one worker, no access
log. `POST /validate` reads the body, parses it with orjson and answers
`{"apiVersion": ..., "kind": "AdmissionReview", "response": {"uid": <request.uid>, "allowed": true}}`:
what any admission webhook must do at least, so the ratio real/baseline is what the policies, validation of
the review, events and metrics cost on top. `GET /readyz` answers 200.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from webhook.certs import ensure_self_signed, uvicorn_tls_context

JSON = "application/json"


def create_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/validate")
    async def validate(request: Request) -> Response:
        review = orjson.loads(await request.body())
        payload = {"apiVersion": review.get("apiVersion"), "kind": "AdmissionReview",
                   "response": {"uid": review["request"]["uid"], "allowed": True}}
        return Response(orjson.dumps(payload), media_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b'{"ready":true}', media_type=JSON)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--cert-dir", type=Path, required=True)
    arguments = parser.parse_args()
    files = ensure_self_signed(arguments.cert_dir, dns_names=[])
    config = uvicorn.Config(
        create_app(), host=arguments.host, port=arguments.port, workers=1, loop="uvloop", http="httptools",
        ssl_certfile=str(files.cert), ssl_keyfile=str(files.key), ssl_context_factory=uvicorn_tls_context,
        log_level="warning", access_log=False, server_header=False, proxy_headers=False)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
