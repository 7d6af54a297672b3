"""LocalConductor's Orkes-style token auth and HTTPS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time

import pytest
import requests

from conductor_workers.testing import LocalConductor


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
