"""``python -m serving`` (and ``loraplane-serve``): run the inference app."""

from __future__ import annotations

import logging
import os
import sys


def main() -> None:
    # Before transformers is imported: no hub access, ever; models come from the share.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import uvicorn
    from pydantic import ValidationError

    from serving.app import create_app
    from serving.settings import ServingSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ServingSettings()
    except ValidationError as exc:
        problems = "; ".join(f"LORAPLANE_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        sys.exit(2)
    logging.getLogger("loraplane.serving").info(
        "serving %s with adapter %s on %s:%d",
        settings.model_dir,
        settings.pointer_file or settings.adapter_dir,
        settings.host,
        settings.port,
    )
    # The event loop (requests, health, reloads) shares the GIL with the engine's thread, whose
    # generation loop is mostly Python: by default it may keep the GIL 5 ms at a time.
    sys.setswitchinterval(0.001)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        ssl_certfile=settings.tls_certfile,
        ssl_keyfile=settings.tls_keyfile if settings.tls_certfile is not None else None,
    )


if __name__ == "__main__":
    main()
