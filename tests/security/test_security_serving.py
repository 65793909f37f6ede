"""One auth-on gateway over TLS with encrypted artifacts: pickle refusal, tamper detection,
encryption at rest, quotas and rate-limit headers, per-function limits, deadlines."""

from __future__ import annotations

import base64
import datetime
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sklearn.linear_model import LogisticRegression

from coldbrew.store import LocalArtifactStore, TamperedArtifact
from coldbrew.store.crypto import ArtifactCipher, is_encrypted
from security.conftest import SecureServer  # by path: several folders have a conftest.py
from support import pack_folder, write_bundle

KEY = base64.b64encode(b"k" * 32).decode()


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TlsServer(SecureServer):
    cert: Path

    def as_(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, verify=str(self.cert))


def tls_server(home: Path, cert: Path, key: Path) -> TlsServer:
    server = TlsServer(
        home,
        env={
            "COLDBREW_AUTH": "on",
            "COLDBREW_API_KEY": "",
            "COLDBREW_TLS_CERT": str(cert),
            "COLDBREW_TLS_KEY": str(key),
            "COLDBREW_ARTIFACT_KEY": KEY,
        },
    )
    server.cert = cert
    server.url = server.url.replace("http://", "https://")
    server.client = httpx.Client(base_url=server.url, timeout=60, verify=str(cert))
    return server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(folder)
    server = tls_server(folder / "home", cert, key)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(tls: TlsServer) -> str:
    return tls.make_key("admin")


def test_plain_http_is_not_served_and_https_is(tls: TlsServer) -> None:
    assert tls.client.get("/healthz").status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(tls.url.replace("https://", "http://") + "/healthz", timeout=5)


def test_pickle_is_refused_unless_trusted(tls: TlsServer, admin: str, tmp_path: Path) -> None:
    model = tmp_path / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=200).fit([[0, 0], [1, 1]], [0, 1]), model)
    with tls.as_(admin) as client:
        refused = client.post(
            "/v1/functions",
            data={"name": "iris"},
            files={"file": ("iris.joblib", model.read_bytes())},
        )
        assert (
            refused.status_code == 422 and refused.json()["error"]["code"] == "UNTRUSTED_ARTIFACT"
        )
        trusted = client.post(
            "/v1/functions",
            data={"name": "iris", "trusted": "true"},
            files={"file": ("iris.joblib", model.read_bytes())},
        )
        assert trusted.status_code == 201, trusted.text
        out = client.post("/v1/functions/iris/invoke", json={"instances": [[1, 1]]})
        assert out.status_code == 200 and out.json()["predictions"] == [1]
    blobs = [p for p in (tls.home / "artifacts" / "sha256").rglob("*") if p.is_file()]
    assert blobs and all(is_encrypted(p) for p in blobs)  # encrypted at rest


def test_quota_and_rate_headers(tls: TlsServer) -> None:
    limited = tls.make_key("invoker", ("*",), rate_per_s=0.01, burst=3, daily_quota=100)
    statuses = []
    with tls.as_(limited) as client:
        for _ in range(4):
            response = client.post("/v1/functions/missing/invoke", json={})
            statuses.append(response.status_code)
    assert statuses == [404, 404, 404, 429]
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert int(response.headers["retry-after"]) >= 1
    assert (
        response.headers["ratelimit-limit"] == "3"
        and response.headers["ratelimit-remaining"] == "0"
    )
    quota = tls.make_key("invoker", ("*",), daily_quota=2)
    with tls.as_(quota) as client:
        codes = [client.post("/v1/functions/missing/invoke", json={}) for _ in range(3)]
    assert [c.status_code for c in codes] == [404, 404, 429]
    assert codes[1].headers["ratelimit-remaining"] == "0"
    assert codes[2].json()["error"]["code"] == "QUOTA_EXCEEDED" and codes[2].headers["retry-after"]


def test_function_rate_limit_and_deadline(tls: TlsServer, admin: str, tmp_path: Path) -> None:
    write_bundle(
        tmp_path,
        "import time\ndef handler(event, context):\n"
        "    time.sleep(event.get('sleep', 0))\n    return {'ok': 1}\n",
        'handler = "handler:handler"\nrate_limit = 0.01\nburst = 2\n',
    )
    with tls.as_(admin) as client:
        deployed = client.post(
            "/v1/functions",
            data={"name": "slow"},
            files={"file": ("b.tar.gz", pack_folder(tmp_path))},
        )
        assert deployed.status_code == 201, deployed.text
        late = client.post(
            "/v1/functions/slow/invoke",
            json={"sleep": 1},
            headers={"X-Coldbrew-Deadline-Ms": "300"},
        )
        assert late.status_code == 504 and late.json()["error"]["code"] == "DEADLINE_EXCEEDED"
        assert client.post("/v1/functions/slow/invoke", json={}).status_code == 200
        third = client.post("/v1/functions/slow/invoke", json={})
        assert third.status_code == 429 and third.json()["error"]["code"] == "RATE_LIMITED"
        bad = client.post(
            "/v1/functions/slow/invoke", json={}, headers={"X-Coldbrew-Deadline-Ms": "soon"}
        )
        assert bad.status_code == 400


def test_tampered_bundle_and_artifact_are_refused(
    tls: TlsServer, admin: str, tmp_path: Path
) -> None:
    write_bundle(
        tmp_path,
        "def handler(event, context):\n    return {'genuine': True}\n",
        'handler = "handler:handler"\nidle_timeout_s = 0\n',
    )
    with tls.as_(admin) as client:
        deployed = client.post(
            "/v1/functions",
            data={"name": "victim"},
            files={"file": ("b.tar.gz", pack_folder(tmp_path))},
        )
        sha = deployed.json()["content_sha256"]
        assert client.post("/v1/functions/victim/invoke", json={}).json() == {"genuine": True}
        target = tls.home / "bundles" / sha / "handler.py"
        target.write_text("def handler(event, context):\n    return {'genuine': False}\n")
        deadline = time.monotonic() + 10
        while (
            client.get("/v1/functions/victim").json()["pools"][0]["instances"]
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)  # idle_timeout_s = 0: the instance goes, the next call spawns one
        tampered = client.post("/v1/functions/victim/invoke", json={})
    assert tampered.status_code == 500 and tampered.json()["error"]["code"] == "ARTIFACT_TAMPERED"
    assert "Traceback" not in tampered.text
    # the stored blob itself: flip a byte of the (encrypted) artifact, drop the bundle, restart
    import hashlib

    blob_sha = hashlib.sha256(
        b"def handler(event, context):\n    return {'genuine': True}\n"
    ).hexdigest()
    blob = tls.home / "artifacts" / "sha256" / blob_sha[:2] / blob_sha
    os.chmod(blob, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(blob.read_bytes())
    data[-20] ^= 1
    blob.write_bytes(bytes(data))
    import shutil

    shutil.rmtree(tls.home / "bundles" / sha)
    tls.stop()
    again = tls_server(
        tls.home, tls.cert, Path(os.environ.get("_", "")) if False else tls.cert.parent / "key.pem"
    )
    again.start()
    try:
        with again.as_(admin) as client:
            answer = client.post("/v1/functions/victim/invoke", json={})
        assert answer.status_code == 500 and answer.json()["error"]["code"] == "ARTIFACT_TAMPERED"
    finally:
        again.stop()


def test_encryption_round_trip(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a", cipher=ArtifactCipher.from_base64(KEY))
    data = os.urandom(3 * 1024 * 1024 + 7)
    sha = store.put_bytes(data)
    raw = store.path_of(sha).read_bytes()
    assert data not in raw and is_encrypted(store.path_of(sha))
    assert store.read_bytes(sha) == data
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 100_000)
    file_sha = store.put_file(src)
    out = store.materialize({"f.bin": file_sha, "d.bin": sha}, tmp_path / "bundle")
    assert (out / "f.bin").read_bytes() == src.read_bytes() and (out / "d.bin").read_bytes() == data
    plain = LocalArtifactStore(tmp_path / "a")  # no key: ciphertext does not pass as content
    with pytest.raises(TamperedArtifact):
        plain.read_bytes(sha)
    wrong = LocalArtifactStore(tmp_path / "a", cipher=ArtifactCipher(b"w" * 32))
    with pytest.raises(TamperedArtifact):
        wrong.read_bytes(sha)
