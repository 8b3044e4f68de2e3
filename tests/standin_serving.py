"""A stand-in for the serving app, light enough for the reconciler's mechanics tests.

Reads the settings the local provider passes (LORAPLANE_PORT, LORAPLANE_SHARE_ROOT,
LORAPLANE_MODEL_PATH) and answers /healthz, /readyz (ready when the model folder exists) and
/v1/adapter. ``STANDIN_EXIT_CODE`` makes it exit at once, as a crashing app would.
Run as a script: ``python tests/standin_serving.py``.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    if "STANDIN_EXIT_CODE" in os.environ:
        print("standin: exiting as asked", flush=True)
        sys.exit(int(os.environ["STANDIN_EXIT_CODE"]))
    port = int(os.environ["LORAPLANE_PORT"])
    model = Path(os.environ["LORAPLANE_SHARE_ROOT"]) / os.environ["LORAPLANE_MODEL_PATH"]

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(200, {"status": "alive"})
            elif self.path == "/readyz":
                if model.is_dir():
                    self._answer(200, {"status": "ready"})
                else:
                    self._answer(503, {"detail": f"model folder {model} is missing"})
            elif self.path == "/v1/adapter":
                self._answer(200, {"version": None, "pid": os.getpid()})
            else:
                self._answer(404, {"detail": "not found"})

        def log_message(self, format: str, *args) -> None:
            print(format % args, flush=True)

    host = os.environ.get("LORAPLANE_HOST", "127.0.0.1")
    server = ThreadingHTTPServer((host if host != "0.0.0.0" else "127.0.0.1", port), Handler)
    if os.environ.get("LORAPLANE_TLS_CERTFILE"):  # as the real app: HTTPS when given a certificate
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.environ["LORAPLANE_TLS_CERTFILE"], os.environ.get("LORAPLANE_TLS_KEYFILE") or None)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    pointer = os.environ.get("LORAPLANE_ADAPTER_POINTER")
    if pointer:  # as the real app: how it is doing, on the share beside the pointer, every second
        threading.Thread(target=report, args=(Path(os.environ["LORAPLANE_SHARE_ROOT"]) / pointer, model), daemon=True).start()
    print(f"standin: serving {model} on port {port}", flush=True)
    server.serve_forever()


def report(pointer: Path, model: Path) -> None:
    folder = pointer.parent / "replicas"
    name = f"{os.environ.get('CONTAINER_APP_REPLICA_NAME') or f'standin-{os.getpid()}'}-{int(time.time())}.json"
    started = datetime.now(UTC).isoformat()
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            body = {
                "replica": name,
                "startedAt": started,
                "updatedAt": datetime.now(UTC).isoformat(),
                "ready": model.is_dir(),
                "detail": "standin",
                "adapter": {"version": None, "adapters": []},
            }
            scratch = folder / f".{name}.tmp"
            scratch.write_text(json.dumps(body))
            os.replace(scratch, folder / name)
        except OSError:
            pass
        time.sleep(1)


if __name__ == "__main__":
    main()
