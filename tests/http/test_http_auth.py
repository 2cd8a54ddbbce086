"""API keys and job ownership through real HTTP (httpx and the official openai client), on a
server with fakeredis and its in-process worker."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from http_servers import MV_MODEL, MV_SETTINGS, FakeAdapter, Served, serve

from app.auth import Guard, KeyRing, check_bind, is_loopback, presented_key, read_key_file
from app.backends import Backends
from app.errors import Unauthorized
from app.redis_embedded import start_fakeredis

KEY_A = "sk-alice-0123456789"
KEY_B = "sk-bob-9876543210"
METRICS_KEY = "scrape-only-key"


def _served(**overrides) -> tuple[Served, object, Backends]:
    settings = dataclasses.replace(MV_SETTINGS, queue_threshold=3, job_chunk_size=2, **overrides)
    backends = Backends(settings, start_fakeredis())
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8, max_tokens=16)
    served, thread = serve(settings, adapter, backends=backends)
    deadline = time.time() + 10
    while backends.jobs is None and time.time() < deadline:
        time.sleep(0.02)
    return served, thread, backends


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> Iterator[Served]:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# team keys\n{KEY_B}   bob the builder\n\n")
    served, thread, _ = _served(api_keys=(KEY_A,), api_key_file=key_file, metrics_key=METRICS_KEY)
    yield served
    thread.stop()


EMBED = {"model": MV_MODEL, "input": ["alpha beta"]}
ROUTES = [
    ("POST", "/v1/embeddings", EMBED),
    ("POST", "/embeddings", EMBED),
    ("POST", "/v1/embeddings/jobs", EMBED),
    ("GET", "/v1/embeddings/jobs/embjob_x", None),
    ("GET", "/v1/embeddings/jobs/embjob_x/result", None),
    ("DELETE", "/v1/embeddings/jobs/embjob_x", None),
    ("GET", "/v1/models", None),
    ("GET", f"/v1/models/{MV_MODEL}", None),
    ("GET", "/models", None),
    ("GET", "/metrics", None),
    ("GET", "/no/such/route", None),
]
BAD_HEADERS = [
    {},
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": f"Basic {KEY_A}"},  # the right key in the wrong scheme
    {"Authorization": "Bearer"},
    {"Authorization": "junk"},
    {"x-api-key": "wrong"},
    {"Authorization": f"Bearer {KEY_A}x"},
    {"Authorization": f"Bearer {METRICS_KEY}"},  # the scrape key opens /metrics only
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_no_wrong_or_junk_key_is_401_on_every_route(keyed, method, path, body) -> None:
    with keyed.client() as c:
        for headers in BAD_HEADERS:
            if path == "/metrics" and METRICS_KEY in str(headers):
                continue
            r = c.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            err = r.json()["error"]
            assert err["code"] == "invalid_api_key" and err["type"] == "authentication_error"
            assert r.headers["www-authenticate"] == "Bearer"
            assert KEY_A not in r.text


@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
@pytest.mark.parametrize("key", [KEY_A, KEY_B])
def test_a_right_key_in_either_header_is_let_in_everywhere(keyed, header, key) -> None:
    headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"x-api-key": key}
    with keyed.client(headers=headers) as c:
        r = c.post("/v1/embeddings", json=EMBED)
        assert r.status_code == 200, r.text
        assert c.post("/embeddings", json=EMBED).status_code == 200
        assert c.get("/v1/models").status_code == 200
        assert c.get("/metrics").status_code == 200
        job = c.post("/v1/embeddings/jobs", json=EMBED)
        assert job.status_code == 202, job.text
        assert c.get(f"/v1/embeddings/jobs/{job.json()['id']}").status_code == 200
        assert c.get("/v1/embeddings/jobs/embjob_x").status_code == 404  # in, then not found
        assert c.get("/no/such/route").status_code == 404


def test_health_is_public_and_metrics_take_the_scrape_key(keyed) -> None:
    with keyed.client() as c:
        assert c.get("/health").status_code == 200
        assert c.head("/health").status_code == 200
        r = c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
        assert r.status_code == 200 and "mlxemb_requests_total" in r.text
        assert c.get("/metrics", headers={"x-api-key": METRICS_KEY}).status_code == 200


def test_openai_client_with_and_without_the_key(keyed) -> None:
    good = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY_A, max_retries=0, timeout=30)
    out = good.embeddings.create(model=MV_MODEL, input=["hello world"])
    assert len(out.data) == 1 and out.usage.total_tokens > 0
    assert [m.id for m in good.models.list()] == [MV_MODEL]
    bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key="sk-wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.embeddings.create(model=MV_MODEL, input=["hello world"])
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"


def test_a_job_is_404_for_another_key_on_status_result_and_delete(keyed) -> None:
    a = keyed.client(headers={"Authorization": f"Bearer {KEY_A}"})
    b = keyed.client(headers={"x-api-key": KEY_B})
    with a, b:
        body = {"model": MV_MODEL, "input": [f"w{i} v{i}" for i in range(6)]}
        job = a.post("/v1/embeddings/jobs", json=body).json()
        url = f"/v1/embeddings/jobs/{job['id']}"
        unknown = b.get("/v1/embeddings/jobs/embjob_doesnotexist").json()
        for r in (b.get(url), b.get(url + "/result"), b.delete(url), b.get(url)):
            assert r.status_code == 404, r.text
            assert r.json()["error"]["code"] == "job_not_found"
            assert unknown["error"]["message"].startswith("no job ")  # same answer as unknown
        deadline = time.time() + 10
        while a.get(url).json()["status"] != "succeeded" and time.time() < deadline:
            time.sleep(0.05)
        assert a.get(url).json()["status"] == "succeeded"  # B's DELETE did not cancel it
        result = a.get(url + "/result")
        assert result.status_code == 200 and len(result.json()["data"]) == 6
        assert a.delete(url).status_code == 200


def test_keys_are_never_logged_but_labels_are(keyed, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        with keyed.client() as c:
            c.post("/v1/embeddings", json=EMBED, headers={"Authorization": f"Bearer {KEY_B}"})
            c.post("/v1/embeddings", json=EMBED, headers={"Authorization": f"Bearer {KEY_A}"})
            c.post("/v1/embeddings", json=EMBED, headers={"Authorization": "Bearer sk-guess"})
        deadline = time.time() + 5
        while len([r for r in caplog.records if r.name == "app.access"]) < 3:
            assert time.time() < deadline
            time.sleep(0.02)
    lines = [r.getMessage() for r in caplog.records if r.name == "app.access"]
    assert any("key=bob the builder" in line and " 200 " in line for line in lines), lines
    assert any("key=key-" in line for line in lines), lines  # a key without a label: its hash
    assert any(" 401 " in line and "key=-" in line for line in lines), lines
    for secret in (KEY_A, KEY_B, "sk-guess"):
        assert secret not in caplog.text


def test_access_log_has_items_tokens_lane_and_ms(keyed, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        with keyed.client(headers={"x-api-key": KEY_A}) as c:
            r = c.post("/v1/embeddings", json={"model": MV_MODEL, "input": ["a b", "c d e"]})
        deadline = time.time() + 5
        while not [x for x in caplog.records if x.name == "app.access"]:
            assert time.time() < deadline
            time.sleep(0.02)
    line = next(x.getMessage() for x in caplog.records if x.name == "app.access")
    tokens = r.json()["usage"]["total_tokens"]
    assert line.startswith("POST /v1/embeddings 200 items=2 ")
    assert f"tokens={tokens} " in line and f"lane={r.headers['x-lane']} " in line
    assert "ms key=key-" in line


def test_health_can_require_a_key() -> None:
    served, thread, _ = _served(api_keys=(KEY_A,), public_health=False)
    try:
        with served.client() as c:
            assert c.get("/health").status_code == 401
            assert c.get("/health", headers={"x-api-key": KEY_A}).status_code == 200
            assert c.get("/metrics").status_code == 401  # no scrape key: an API key
            assert c.get("/metrics", headers={"x-api-key": KEY_A}).status_code == 200
    finally:
        thread.stop()


def test_without_keys_everything_is_open_and_jobs_are_shared() -> None:
    served, thread, _ = _served()
    try:
        with served.client(headers={"Authorization": "Bearer anything"}) as c:
            assert c.post("/v1/embeddings", json=EMBED).status_code == 200
            job = c.post("/v1/embeddings/jobs", json=EMBED).json()
        with served.client() as c:
            assert c.get(f"/v1/embeddings/jobs/{job['id']}").status_code == 200
            assert c.get("/metrics").status_code == 200
    finally:
        thread.stop()


def test_the_ingest_client_sends_its_api_key(keyed) -> None:
    from app.ingest.client import EmbeddingsClient, ServerError

    with EmbeddingsClient(keyed.url, api_key=KEY_B, timeout=30) as client:
        assert client.model_id() == MV_MODEL
        assert len(client.embed(["one two"], MV_MODEL)) == 1
    with EmbeddingsClient(keyed.url, api_key=None, timeout=30) as client:
        with pytest.raises(ServerError) as info:
            client.model_id()
    assert info.value.status == 401 and "--api-key" in str(info.value)


# ---- the pieces -------------------------------------------------------------------------------
def test_key_file_labels_and_comments(tmp_path) -> None:
    f = tmp_path / "keys"
    f.write_text("k1\n# comment\n  k2\tci runner \n\nk3 a b c\n")
    assert read_key_file(f) == [("k1", None), ("k2", "ci runner"), ("k3", "a b c")]
    ring = KeyRing(read_key_file(f))
    assert ring.identify("k2").label == "ci runner" and ring.identify("k4") is None
    assert ring.identify("k1").label.startswith("key-") and "k1" not in ring.identify("k1").label
    assert ring.identify("k1").owner != ring.identify("k3").owner


def test_presented_key_forms() -> None:
    assert presented_key({"authorization": "Bearer  abc "}) == "abc"
    assert presented_key({"authorization": "bearer abc"}) == "abc"
    assert presented_key({"x-api-key": "xyz"}) == "xyz"
    assert presented_key({"authorization": "Basic abc"}) is None
    assert presented_key({}) is None


def test_guard_messages() -> None:
    guard = Guard(KeyRing([("k", None)]), public_health=True)
    with pytest.raises(Unauthorized, match="missing API key"):
        guard.check("/v1/embeddings", {})
    with pytest.raises(Unauthorized, match="incorrect API key"):
        guard.check("/v1/embeddings", {"x-api-key": "nope"})
    assert guard.check("/health/", {}).owner == ""


@pytest.mark.parametrize(
    ("host", "keys", "allow", "refused"),
    [
        ("127.0.0.1", (), False, False),
        ("localhost", (), False, False),
        ("::1", (), False, False),
        ("0.0.0.0", (), False, True),
        ("192.168.1.20", (), False, True),
        ("0.0.0.0", ("k",), False, False),
        ("0.0.0.0", (), True, False),
    ],
)
def test_binding_rules(host, keys, allow, refused) -> None:
    s = dataclasses.replace(MV_SETTINGS, host=host, api_keys=keys, allow_unauthenticated=allow)
    problem = check_bind(s, KeyRing.from_settings(s))
    assert (problem is not None) == refused
    if refused:
        assert "--api-key" in problem and "--allow-unauthenticated" in problem
    assert is_loopback("127.0.0.2") and not is_loopback("example.com")


def test_http_errors_are_openai_shaped_for_httpx_users(keyed) -> None:
    r = httpx.post(keyed.url + "/v1/embeddings", json=EMBED, timeout=10)
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
