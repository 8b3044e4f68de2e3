"""What every benchmark shares: percentiles, a printed table, a JSON result file, starting a
process and waiting for it (or for anything) to be ready, and a fresh PostgreSQL database."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

T = TypeVar("T")

RESULTS = Path(__file__).resolve().parent / "results"
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def table(title: str, columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in columns]] + [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells[1:]]
    return "\n".join(lines)


def write_result(name: str, document: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        **document,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """The first true value ``probe`` gives, checked every ``interval`` s; a clear exit after
    ``timeout`` s naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"gave up after {timeout:.0f}s waiting for {what}")


def start_ready(command: list[str], env: Mapping[str, str], url: str, timeout: float = 180) -> subprocess.Popen:
    """Start ``command`` and wait until ``url``/readyz answers 200."""
    process = subprocess.Popen(command, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"{command[0]} exited with {process.returncode} before it was ready")
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout, f"{url}/readyz", interval=0.1)
    except SystemExit:
        process.kill()
        raise
    return process


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any LORAPLANE_ setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLANE_")}
    env["HF_HUB_OFFLINE"] = "1"
    env.update(settings)
    return env


def start_service(
    data_dir: Path, database_url: str | None = None, *, extra_env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """``loraplane serve`` on a free port, as it runs by default (tokens checked): the process,
    its URL and the headers that carry the admin token it writes on first start."""
    port = free_port()
    env = clean_env(LORAPLANE_LOG_LEVEL="warning", **(extra_env or {}))
    if database_url:
        env["LORAPLANE_DATABASE_URL"] = database_url
    binary = str(Path(sys.executable).parent / "loraplane")
    url = f"http://127.0.0.1:{port}"
    process = start_ready([binary, "serve", "--port", str(port), "--data-dir", str(data_dir)], env, url, timeout=60)
    token = (data_dir / "admin-token").read_text().strip()
    return process, url, {"Authorization": f"Bearer {token}"}


def fresh_postgres(stack: ExitStack) -> str | None:
    """A new database on this machine's PostgreSQL, dropped when ``stack`` closes; None (and
    why, on stderr) when PostgreSQL is not reachable."""
    admin_url = make_url(POSTGRES_ADMIN)
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        print(f"PostgreSQL is not reachable ({type(exc).__name__}): the scale-out part is skipped", file=sys.stderr)
        return None
    name = f"loraplane_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    stack.callback(drop)
    return admin_url.set(database=name).render_as_string(hide_password=False)
