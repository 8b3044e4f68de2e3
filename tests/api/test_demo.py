"""What `make run` does, end to end: the tiny model, the real serving app launched by the local
provider, a chat completion, and the printed command that swaps in the second adapter."""

from __future__ import annotations

import re
import subprocess

import httpx
import openai

from infra.local.provider import LocalProvider
from tests.api.test_cli import run_cli
from tests.conftest import start_service, stop_service
from tests.fakes import eventually


def test_the_demo_serves_a_chat_and_hot_reloads_the_second_adapter(tmp_path):
    data_dir = tmp_path / "data"
    made = run_cli(None, "dev", "tiny-model", str(data_dir / "demo-share"))
    assert made.returncode == 0, made.stderr
    assert "model:" in made.stdout and "second_adapter:" in made.stdout

    service = start_service(data_dir, "--demo", standin=False)
    try:
        announcement = eventually(
            lambda: re.search(
                r"is Ready at (\S+), serving two adapters.*?\n  the other adapter, by name: ([^\n]+)\n.*?\n.*?\n\s+(cp [^\n]+)\n",
                service.log.read_text(),
                re.S,
            ),
            timeout=180,
            interval=0.5,
            what="the demo to be announced",
        )
        endpoint, other_curl, swap_command = announcement.group(1), announcement.group(2), announcement.group(3)
        client = openai.OpenAI(base_url=f"{endpoint}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="demo", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
        )
        first = raw.headers["x-adapter-version"]
        assert raw.parse().system_fingerprint == f"lp-{first}"
        assert {m.id for m in client.models.list().data} == {"loraplane/tiny-llama", "demo", "second"}
        # The printed curl for the other adapter answers from it, by name.
        other = subprocess.run(other_curl, shell=True, check=True, capture_output=True, text=True).stdout
        other_version = re.search(r"x-adapter-version: (\S+)", other, re.I).group(1)
        assert other_version not in (first, "base") and '"model":"second"' in other.replace(" ", "")

        subprocess.run(swap_command, shell=True, check=True)

        def version() -> str | None:
            answer = httpx.post(
                f"{endpoint}/v1/chat/completions",
                json={"model": "demo", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4},
                timeout=30,
            )
            assert answer.status_code == 200
            return answer.headers["x-adapter-version"] if answer.headers["x-adapter-version"] != first else None

        second = eventually(version, timeout=60, interval=0.5, what="the second adapter")
        # Both are versions the reconciler staged: the history shows them, the newest serving.
        history = run_cli(service, "adapters", "demo")
        assert history.returncode == 0, history.stderr
        rows = [line.split() for line in history.stdout.splitlines()[1:]]
        assert [row[:4] for row in rows if row[0] == "demo"] == [["demo", second, "Active", "serving"], ["demo", first, "Superseded", "-"]]
        assert [row[:4] for row in rows if row[0] == "second"] == [["second", other_version, "Active", "serving"]]
        swapped = httpx.post(
            f"{endpoint}/v1/chat/completions",
            json={"model": "second", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4},
            timeout=30,
        )
        assert swapped.headers["x-adapter-version"] == other_version  # the other adapter was left alone
        ui = httpx.get(f"{endpoint}/", timeout=30)
        assert ui.status_code == 200 and "gradio" in ui.text.lower()
        status = httpx.get(f"{service.url}/v1/deployments/demo").json()["status"]
        assert status["phase"] == "Ready" and status["endpoint"] == endpoint
        # Ctrl-C (or make run's SIGTERM) stops what the demo started: before, two serving
        # processes of ~450 MB each were left running, silently.
        stop_service(service)
        assert LocalProvider(data_dir / "local").left_running() == []
    finally:
        stop_service(service)
        LocalProvider(data_dir / "local").stop_all()
