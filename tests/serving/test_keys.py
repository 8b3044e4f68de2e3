"""Inference keys in the serving app: who may call it (through the unchanged OpenAI SDK), how
much, and what each key used; a key made or revoked on the share takes effect within seconds."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from serving.keys import Key, KeyLimits, KeyRing, Refused
from tests.fakes import FakeClock, eventually

KEYS_FILE = ".loraplane/support-bot/0123abcd/keys.json"
CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}


def write_keys(share: Path, *keys: dict) -> None:
    """As loraplane writes it: hashes and limits, replaced whole."""
    path = share / KEYS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(".keys.json.tmp")
    scratch.write_text(json.dumps({"keys": list(keys)}))
    os.replace(scratch, path)


def entry(name: str, secret: str, **limits) -> dict:
    return {"name": name, "sha256": hashlib.sha256(secret.encode()).hexdigest(), **limits}


def test_without_a_valid_key_every_route_but_the_probes_is_401_in_openais_shape(serve_app, tiny_share: Path):
    write_keys(tiny_share, entry("web", "lpk_web-secret"))
    app = serve_app(tiny_share, api_keys_file=KEYS_FILE, admin_token="the-admin-token")
    with app.client() as client:
        for path in ("/v1/models", "/v1/adapter", "/metrics", "/docs", "/openapi.json", "/tokenizer_info"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "invalid_api_key"
        assert client.post(CHAT, json=HELLO).status_code == 401
        assert client.post("/tokenize", json={"prompt": "Hello"}).status_code == 401
        assert client.post("/detokenize", json={"tokens": [1]}).status_code == 401
        wrong = client.post(CHAT, json=HELLO, headers={"Authorization": "Bearer lpk_mistyped"})
        assert wrong.status_code == 401 and "revoked or mistyped" in wrong.json()["error"]["message"]
        # The admin token opens the admin endpoints and nothing else: it is never an inference key.
        assert client.post(CHAT, json=HELLO, headers={"Authorization": "Bearer the-admin-token"}).status_code == 401
        assert client.get("/admin/adapter", headers={"Authorization": "Bearer the-admin-token"}).status_code == 200
        assert client.get("/admin/adapter", headers={"Authorization": "Bearer lpk_web-secret"}).status_code == 401
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    sdk = openai.OpenAI(base_url=f"{app.url}/v1", api_key="lpk_web-secret", max_retries=0)
    answer = sdk.chat.completions.create(model="adapter", messages=[{"role": "user", "content": "Hello"}], max_tokens=2)
    assert answer.choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{app.url}/v1", api_key="lpk_other", max_retries=0).models.list()


def test_a_key_made_or_revoked_on_the_share_takes_effect_without_a_restart(serve_app, tiny_share: Path):
    write_keys(tiny_share, entry("web", "lpk_web-secret"))
    app = serve_app(tiny_share, api_keys_file=KEYS_FILE, keys_refresh_seconds=0.1)

    def status(secret: str) -> int:
        return httpx.get(f"{app.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code

    assert status("lpk_web-secret") == 200 and status("lpk_ci-secret") == 401
    write_keys(tiny_share, entry("web", "lpk_web-secret"), entry("ci", "lpk_ci-secret"))
    eventually(lambda: status("lpk_ci-secret") == 200, what="the new key to be taken")
    write_keys(tiny_share, entry("ci", "lpk_ci-secret"))
    eventually(lambda: status("lpk_web-secret") == 401, what="the revoked key to be refused")
    assert status("lpk_ci-secret") == 200


def test_a_missing_keys_file_lets_nobody_in(serve_app, tiny_share: Path):
    app = serve_app(tiny_share, api_keys_file=KEYS_FILE)
    refused = httpx.get(f"{app.url}/v1/models", headers={"Authorization": "Bearer lpk_anything"})
    assert refused.status_code == 401 and "no inference keys are set up" in refused.json()["error"]["message"]


def test_past_its_requests_a_minute_a_key_gets_429_with_openais_headers_while_another_is_served(serve_app, tiny_share: Path):
    write_keys(tiny_share, entry("eval", "lpk_eval", rpm=3), entry("web", "lpk_web"))
    app = serve_app(tiny_share, api_keys_file=KEYS_FILE, report_interval_seconds=0.2)
    evaluator = {"Authorization": "Bearer lpk_eval"}
    with app.client() as client:
        served = [client.post(CHAT, json=HELLO, headers=evaluator) for _ in range(3)]
        assert [r.status_code for r in served] == [200, 200, 200]
        assert served[0].headers["x-ratelimit-limit-requests"] == "3"
        assert served[0].headers["x-ratelimit-remaining-requests"] == "2"
        refused = client.post(CHAT, json=HELLO, headers=evaluator)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1 and refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded" and "3 requests a minute" in refused.json()["error"]["message"]
        assert client.post(CHAT, json=HELLO, headers={"Authorization": "Bearer lpk_web"}).status_code == 200
        metrics = client.get("/metrics", headers={"Authorization": "Bearer lpk_web"}).text
    assert 'loraplane_serving_key_requests_total{key="eval"} 3.0' in metrics
    assert 'loraplane_serving_key_refused_total{key="eval",limit="requests"} 1.0' in metrics
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=f"{app.url}/v1", api_key="lpk_eval", max_retries=0).chat.completions.create(
            model="adapter", messages=[{"role": "user", "content": "Hello"}], max_tokens=2
        )
    usage_folder = tiny_share / KEYS_FILE.replace("keys.json", "usage")

    def written() -> dict | None:  # by key name here; the file has them by hash, with the name
        files = list(usage_folder.glob("*.json"))
        return {u["name"]: u for u in json.loads(files[0].read_text())["keys"].values()} if files else None

    usage = eventually(lambda: (u := written()) and u.get("eval", {}).get("refused") == 2 and u, what="the usage file")
    assert usage["eval"]["requests"] == 3 and usage["web"]["requests"] == 2
    assert usage["eval"]["promptTokens"] > 0 and usage["eval"]["completionTokens"] > 0


def test_the_key_ring_reads_limits_and_expiry_and_keeps_the_last_good_file(tmp_path: Path):
    clock, now = FakeClock(), datetime(2026, 11, 30, tzinfo=UTC)
    path = tmp_path / "keys.json"
    ring = KeyRing(path, refresh_seconds=1.0, clock=clock, wall=lambda: now)
    with pytest.raises(Refused, match="no inference keys are set up"):
        ring.check("Bearer lpk_a")
    path.write_text(
        json.dumps({"keys": [entry("a", "lpk_a", rpm=5), entry("old", "lpk_old", expiresAt=(now - timedelta(seconds=1)).isoformat())]})
    )
    clock.advance(1.0)
    assert ring.check("Bearer lpk_a") == Key("a", hashlib.sha256(b"lpk_a").hexdigest(), rpm=5)
    with pytest.raises(Refused, match="expired"):
        ring.check("Bearer lpk_old")
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(Refused) as refused:
            ring.check(header)
        assert refused.value.status == 401
    path.write_text("{not json")
    clock.advance(1.0)
    assert ring.check("Bearer lpk_a").name == "a"  # a file caught half-written keeps what was read


def test_a_keys_tokens_a_minute_refill_continuously_and_a_generation_may_overdraw_once():
    clock = FakeClock()
    limits = KeyLimits(CollectorRegistry(), clock=clock)
    key = Key("eval", "x" * 64, tpm=60)
    headers = limits.admit(key)
    assert headers["x-ratelimit-limit-tokens"] == "60" and headers["x-ratelimit-remaining-tokens"] == "60"
    limits.charge(key, 50, 30)  # 80 of 60: the bucket is 20 below
    with pytest.raises(Refused) as refused:
        limits.admit(key)
    assert refused.value.status == 429 and refused.value.headers["retry-after"] == "21"  # 21 tokens at one a second
    clock.advance(21)
    assert limits.admit(key)["x-ratelimit-remaining-tokens"] == "1"
    assert limits.usage() == {"x" * 16: {"name": "eval", "requests": 2, "promptTokens": 50, "completionTokens": 30, "refused": 1}}


def test_the_chat_asks_for_a_key_once_at_its_sign_in(serve_app, tiny_share: Path):
    write_keys(tiny_share, entry("web", "lpk_web-secret"))
    app = serve_app(tiny_share, api_keys_file=KEYS_FILE, ui=True)
    with httpx.Client(base_url=app.url, timeout=60) as browser:
        assert browser.get("/config").status_code == 401  # the chat's own API, before signing in
        assert browser.post("/login", data={"username": "me", "password": "lpk_mistyped"}).status_code == 400
        assert browser.post("/login", data={"username": "me", "password": "lpk_web-secret"}).json() == {"success": True}
        assert browser.get("/config").status_code == 200  # signed in: the chat answers from now on
