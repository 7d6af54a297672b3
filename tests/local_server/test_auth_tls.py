"""LocalConductor's Orkes-style token auth and HTTPS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time

import pytest
import requests

from conductor_workers import ConductorClient, Configuration
from conductor_workers.testing import LocalConductor, PayloadLimits


def test_without_auth_token_endpoint_is_404(api):
    assert api.post("/token", json={"keyId": "k", "keySecret": "s"}).status_code == 404


def test_token_flow():
    with LocalConductor(auth=("key", "secret")) as server:
        session = requests.Session()
        url = server.url
        assert session.get(url[: -len("/api")] + "/health").status_code == 200
        missing = session.get(url + "/metadata/taskdefs")
        assert missing.status_code == 401
        body = missing.json()
        assert body["error"] == "INVALID_TOKEN" and body["message"] and body["timestamp"] > 0
        bad = session.post(url + "/token", json={"keyId": "key", "keySecret": "wrong"})
        assert bad.status_code == 401 and bad.json()["status"] == 401
        token = session.post(url + "/token", json={"keyId": "key", "keySecret": "secret"}).json()["token"]
        ok = session.get(url + "/metadata/taskdefs", headers={"X-Authorization": token})
        assert ok.status_code == 200 and ok.json() == []
        invalid = session.get(url + "/metadata/taskdefs", headers={"X-Authorization": "forged"})
        assert invalid.status_code == 401 and invalid.json()["error"] == "INVALID_TOKEN"
        server.expire_tokens()
        expired = session.get(url + "/metadata/taskdefs", headers={"X-Authorization": token})
        assert expired.status_code == 401 and expired.json()["error"] == "EXPIRED_TOKEN"


def test_tokens_expire_after_ttl():
    # Seconds, not fractions of one, and waits computed from the clock: a slow machine can neither
    # expire the token before it is checked nor end the wait before the TTL is over.
    ttl = 3.0
    with LocalConductor(auth=("key", "secret"), token_ttl=ttl) as server:
        credentials = {"keyId": "key", "keySecret": "secret"}
        not_before = time.monotonic()  # the server starts the token's TTL after this instant ...
        token = requests.post(server.url + "/token", json=credentials).json()["token"]
        issued_by = time.monotonic()  # ... and before this one
        headers = {"X-Authorization": token}
        time.sleep(max(0.0, not_before + ttl / 2 - time.monotonic()))
        assert requests.get(server.url + "/metadata/taskdefs", headers=headers).status_code == 200  # halfway
        time.sleep(max(0.0, issued_by + ttl - time.monotonic()) + 0.05)
        response = requests.get(server.url + "/metadata/taskdefs", headers=headers)
        assert response.status_code == 401 and response.json()["error"] == "EXPIRED_TOKEN"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "basicConstraints=critical,CA:TRUE", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    with LocalConductor(tls=context) as server:
        assert server.url.startswith("https://")
        session = requests.Session()
        session.verify = str(cert)
        session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides session.verify
        assert session.get(server.url + "/health").json()["healthy"] is True
        assert session.post(server.url + "/metadata/taskdefs", json=[{"name": "t"}]).status_code == 200
        assert session.get(server.url + "/metadata/taskdefs/t").json()["name"] == "t"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(server.url + "/health", timeout=5)  # not trusted without the CA


# -- external payload storage under auth ------------------------------------------------------------


def _token(server: LocalConductor) -> str:
    answer = requests.post(server.url + "/token", json={"keyId": "key", "keySecret": "secret"}, timeout=10)
    return answer.json()["token"]


def _location(server: LocalConductor, token: str, operation: str, path: str = "") -> dict:
    answer = requests.get(server.url + "/tasks/externalstoragelocation", timeout=10,
                          params={"path": path, "operation": operation, "payloadType": "TASK_OUTPUT"},
                          headers={"X-Authorization": token})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_payload_storage_needs_the_token_or_a_signed_location_under_auth():
    with LocalConductor(auth=("key", "secret")) as server:
        token = _token(server)
        storage = server.url + "/external/local/"
        # without a token, nothing: neither an upload nor a download
        assert requests.put(storage + "k1.json", json={"amount": 10}, timeout=10).status_code == 401
        assert requests.get(storage + "k1.json", timeout=10).status_code == 401
        # with a token, both
        headers = {"X-Authorization": token}
        assert requests.put(storage + "k1.json", json={"amount": 10}, headers=headers, timeout=10).status_code == 200
        assert requests.get(storage + "k1.json", headers=headers, timeout=10).json() == {"amount": 10}
        # a location handed out to a token holder works without one, for its key and operation only
        write = _location(server, token, "WRITE")
        assert requests.put(write["uri"], json={"amount": 20}, timeout=10).status_code == 200
        read = _location(server, token, "READ", write["path"])
        assert requests.get(read["uri"], timeout=10).json() == {"amount": 20}
        assert requests.put(read["uri"], json={"amount": 1}, timeout=10).status_code == 401  # a READ location
        other = _location(server, token, "READ", "k1.json")["uri"].replace("k1.json", write["path"])
        assert requests.get(other, timeout=10).status_code == 401  # signed for another key
        forged = read["uri"][:-3] + ("abc" if not read["uri"].endswith("abc") else "abd")
        assert requests.get(forged, timeout=10).status_code == 401
        assert requests.get(read["uri"].split("?")[0], timeout=10).status_code == 401


def test_a_signed_location_expires_with_the_token_ttl():
    ttl = 2.0
    with LocalConductor(auth=("key", "secret"), token_ttl=ttl) as server:
        token = _token(server)
        headers = {"X-Authorization": token}
        put = requests.put(server.url + "/external/local/k.json", json={"a": 1}, headers=headers, timeout=10)
        assert put.status_code == 200
        handed_out = time.time()
        uri = _location(server, token, "READ", "k.json")["uri"]
        assert requests.get(uri, timeout=10).status_code == 200
        time.sleep(max(0.0, handed_out + ttl + 1.1 - time.time()))  # expiries are whole seconds
        assert requests.get(uri, timeout=10).status_code == 401


def test_a_payload_is_never_overwritten(api):
    first = api.put("/external/local/taken.json", json={"amount": 10})
    assert first.status_code == 200
    again = api.put("/external/local/taken.json", json={"amount": 1000000})
    assert again.status_code == 409 and again.json()["status"] == 409
    assert api.get("/external/local/taken.json").json() == {"amount": 10}


def test_a_worker_reads_an_externalized_input_under_auth():
    limits = PayloadLimits(task_threshold_kb=1)
    with LocalConductor(auth=("key", "secret"), payload_limits=limits) as server:
        client = ConductorClient(Configuration(server_url=server.url, key_id="key", key_secret="secret"))
        try:
            token = _token(server)
            headers = {"X-Authorization": token}
            definition = [{"name": "wf_big_in", "tasks": [{"name": "big_in", "taskReferenceName": "b",
                                                           "type": "SIMPLE",
                                                           "inputParameters": {"data": "${workflow.input.data}"}}]}]
            assert requests.put(server.url + "/metadata/workflow", json=definition, headers=headers,
                                timeout=10).status_code == 200
            assert requests.post(server.url + "/workflow/wf_big_in", json={"data": "x" * 4096}, headers=headers,
                                 timeout=10).status_code == 200
            polled = requests.get(server.url + "/tasks/poll/batch/big_in", params={"count": 1, "timeout": 2000},
                                  headers=headers, timeout=10).json()
            path = polled[0]["externalInputPayloadStoragePath"]
            assert polled[0]["inputData"] == {} and path
            assert client.payloads.read(path, "TASK_INPUT") == {"data": "x" * 4096}
        finally:
            client.close()
