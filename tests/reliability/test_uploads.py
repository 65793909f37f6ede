"""Hostile uploads: bombs, too many files, escapes, and bodies over the limit whatever their
transfer encoding. Each is refused with a 4xx and a stable code, and leaves nothing behind in
COLDBREW_HOME (no partial extraction, no spooled upload, no blob)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coldbrew import errors
from coldbrew.deploy.unpack import UnpackLimits, unpack_upload
from support import Server

MiB = 1024 * 1024
MAX_BUNDLE = 40 * MiB  # room for the memory test; over-limit tests send more
MAX_UNPACKED = 8 * MiB
MAX_FILES = 50
HANDLER = b"def handler(event, context):\n    return {'echo': event}\n"
CONFIG = b'handler = "handler:handler"\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("uploads"),
        {
            "COLDBREW_MAX_BUNDLE_BYTES": str(MAX_BUNDLE),
            "COLDBREW_MAX_UNPACKED_BYTES": str(MAX_UNPACKED),
            "COLDBREW_MAX_BUNDLE_FILES": str(MAX_FILES),
        },
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _kept(home: Path) -> set[str]:
    """What a deploy leaves on disk: spooled uploads, extractions, blobs, bundles."""
    found = {str(p.relative_to(home)) for p in (home / "run").glob("deploy-*")}
    for sub in ("artifacts/sha256", "artifacts/tmp", "bundles"):
        found |= {str(p.relative_to(home)) for p in (home / sub).rglob("*") if p.is_file()}
    return found


def _refused(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == code, response.text[:300]
    assert "Traceback" not in response.text
    return error


def _deploy(server: Server, filename: str, data: bytes, name: str = "up") -> httpx.Response:
    before = _kept(server.home)
    response = server.client.post(
        "/v1/functions", data={"name": name}, files={"file": (filename, data)}
    )
    if response.status_code >= 400:
        assert _kept(server.home) == before, "a refused deploy left files behind"
    return response


def zip_of_zeros(size: int) -> bytes:
    """A valid bundle plus ``zeros.bin``: ``size`` zero bytes, deflated ~1000:1."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bundle:
        bundle.writestr("coldbrew.toml", CONFIG)
        bundle.writestr("handler.py", HANDLER)
        with bundle.open("zeros.bin", "w") as out:
            for _ in range(size // MiB):
                out.write(bytes(MiB))
    return buffer.getvalue()


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def tar_of_zeros(size: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as tar:
        for name, data in (("coldbrew.toml", CONFIG), ("handler.py", HANDLER)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        tar.addfile(info, _Zeros(size))
    return buffer.getvalue()


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, without holding them."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


# --- bombs and file counts over HTTP ----------------------------------------------------------


def test_zip_bomb_is_refused_and_leaves_nothing(server: Server) -> None:
    bomb = zip_of_zeros(256 * MiB)  # ~250 KB on the wire, 256 MiB unpacked
    assert len(bomb) < MAX_BUNDLE
    started = time.monotonic()
    error = _refused(_deploy(server, "bundle.zip", bomb), 413, "BUNDLE_TOO_LARGE")
    assert error["max_unpacked_bytes"] == MAX_UNPACKED
    assert "COLDBREW_MAX_UNPACKED_BYTES" in str(error["message"])
    assert time.monotonic() - started < 10  # stopped at 8 MiB, not after 256


def test_tar_gz_bomb_is_refused_and_leaves_nothing(server: Server) -> None:
    bomb = tar_of_zeros(256 * MiB)
    assert len(bomb) < MAX_BUNDLE
    _refused(_deploy(server, "bundle.tar.gz", bomb), 413, "BUNDLE_TOO_LARGE")


def test_too_many_files_are_refused(server: Server) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("coldbrew.toml", CONFIG)
        bundle.writestr("handler.py", HANDLER)
        for i in range(MAX_FILES):
            bundle.writestr(f"data/{i}.txt", b"")
    error = _refused(_deploy(server, "bundle.zip", buffer.getvalue()), 413, "BUNDLE_TOO_LARGE")
    assert error["max_bundle_files"] == MAX_FILES
    members = [_file("coldbrew.toml", CONFIG)] + [_file(f"{i}.txt", b"") for i in range(60)]
    _refused(_deploy(server, "bundle.tar.gz", _tar(members)), 413, "BUNDLE_TOO_LARGE")


def test_hard_links_cannot_multiply_a_bundle(server: Server) -> None:
    """21 names for one 512 KiB file: stored as 21 copies, so 10.5 MiB are counted."""
    members = [_file("coldbrew.toml", CONFIG), _file("handler.py", HANDLER)]
    members.append(_file("big.bin", os.urandom(MiB // 2)))
    members += [_special(f"copy{i}.bin", tarfile.LNKTYPE, "big.bin") for i in range(20)]
    _refused(_deploy(server, "bundle.tar.gz", _tar(members)), 413, "BUNDLE_TOO_LARGE")


@pytest.mark.parametrize(
    "member",
    [
        _file("../escaped.py", b"x"),
        _file("/abs.py", b"x"),
        _special("link", tarfile.SYMTYPE, "/etc/passwd"),
        _special("link", tarfile.SYMTYPE, "../../../../etc"),
        _special("hard", tarfile.LNKTYPE, "../../outside"),
        _special("dev", tarfile.CHRTYPE),
        _special("fifo", tarfile.FIFOTYPE),
    ],
    ids=["dotdot", "absolute", "symlink-abs", "symlink-out", "hardlink-out", "device", "fifo"],
)
def test_escaping_tar_members_are_refused(
    server: Server, member: tuple[tarfile.TarInfo, bytes | None]
) -> None:
    data = _tar([_file("coldbrew.toml", CONFIG), _file("handler.py", HANDLER), member])
    _refused(_deploy(server, "bundle.tar.gz", data), 400, "VALIDATION_ERROR")
    assert not (server.home / "run" / "escaped.py").exists()


def test_a_bundle_within_the_limits_deploys(server: Server) -> None:
    response = _deploy(server, "bundle.zip", zip_of_zeros(4 * MiB), name="fits")
    assert response.status_code == 201, response.text
    assert server.invoke("fits", {"a": 1}).json() == {"echo": {"a": 1}}


# --- the transfer limit holds for every encoding ----------------------------------------------


def _multipart(filename: str, chunks: Iterator[bytes], name: str = "chunked") -> Iterator[bytes]:
    yield (
        f'--BOUNDARY\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
        f'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from chunks
    yield b"\r\n--BOUNDARY--\r\n"


def _megabytes(n: int) -> Iterator[bytes]:
    chunk = os.urandom(64 * 1024)
    for _ in range(n * 16):
        yield chunk


def _post_chunked(server: Server, body: Iterator[bytes], **kwargs: object) -> httpx.Response:
    """POST with a generator body: httpx sends it chunked, with no Content-Length."""
    seen: dict[str, str] = {}

    def remember(request: httpx.Request) -> None:
        seen.update(request.headers)

    with httpx.Client(base_url=server.url, timeout=60, event_hooks={"request": [remember]}) as c:
        response = c.post("/v1/functions", content=body, **kwargs)  # type: ignore[arg-type]
    assert "content-length" not in seen and seen.get("transfer-encoding") == "chunked"
    return response


def test_chunked_multipart_over_the_limit_is_refused(server: Server) -> None:
    before = _kept(server.home)
    body = _multipart("bundle.zip", _megabytes(48))  # 48 MB against a 40 MB limit
    headers = {"content-type": "multipart/form-data; boundary=BOUNDARY"}
    error = _refused(_post_chunked(server, body, headers=headers), 413, "PAYLOAD_TOO_LARGE")
    assert error["limit_bytes"] == MAX_BUNDLE
    assert _kept(server.home) == before
    assert server.client.get("/v1/functions/chunked").status_code == 404


def test_chunked_raw_body_over_the_limit_is_refused(server: Server) -> None:
    before = _kept(server.home)
    params = {"name": "chunked", "filename": "bundle.tar.gz"}
    response = _post_chunked(server, _megabytes(48), params=params)
    _refused(response, 413, "PAYLOAD_TOO_LARGE")
    assert _kept(server.home) == before


def test_declared_length_over_the_limit_is_refused_before_reading(server: Server) -> None:
    response = server.client.post(
        "/v1/functions",
        params={"name": "big", "filename": "bundle.zip"},
        content=bytes(MAX_BUNDLE + 1),
    )
    _refused(response, 413, "PAYLOAD_TOO_LARGE")


def test_chunked_uploads_within_the_limit_deploy(server: Server) -> None:
    bundle = zip_of_zeros(2 * MiB)
    pieces = [bundle[i : i + 4096] for i in range(0, len(bundle), 4096)]
    headers = {"content-type": "multipart/form-data; boundary=BOUNDARY"}
    body = _multipart("bundle.zip", iter(pieces), name="chunky")
    response = _post_chunked(server, body, headers=headers)
    assert response.status_code == 201, response.text
    params = {"name": "raw-chunky", "filename": "bundle.zip"}
    response = _post_chunked(server, iter(pieces), params=params)
    assert response.status_code == 201, response.text
    assert server.invoke("raw-chunky", 7).json() == {"echo": 7}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'--BOUNDARY\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n'
            b"--BOUNDARY--\r\n",
            "needs a 'file' part",
        ),
        (
            b"--BOUNDARY\r\nContent-Disposition: form-data\r\n\r\nx\r\n--BOUNDARY--\r\n",
            "Content-Disposition name",
        ),
        (
            b"".join(
                b'--BOUNDARY\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i
                for i in range(20)
            )
            + b"--BOUNDARY--\r\n",
            "at most",
        ),
        (
            b'--BOUNDARY\r\nContent-Disposition: form-data; name="d"\r\n\r\n'
            + b"x" * 70_000
            + b"\r\n--BOUNDARY--\r\n",
            "longer than",
        ),
    ],
    ids=["no-file", "no-name", "too-many-fields", "long-field"],
)
def test_malformed_multipart_is_a_400(server: Server, body: bytes, message: str) -> None:
    response = server.client.post(
        "/v1/functions",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=BOUNDARY"},
    )
    error = _refused(response, 400, "VALIDATION_ERROR")
    assert message in str(error["message"])


# --- unpack, in process (the same checks, fast, and what the folder looks like) ---------------

LIMITS = UnpackLimits(max_bytes=MAX_UNPACKED, max_files=MAX_FILES)


def _unpack(tmp_path: Path, filename: str, data: bytes) -> Path:
    upload = tmp_path / "upload"
    upload.write_bytes(data)
    return unpack_upload(upload, filename, tmp_path / "bundle", LIMITS)[0]


def test_unpack_stops_at_the_limit_and_removes_the_folder(tmp_path: Path) -> None:
    with pytest.raises(errors.BundleTooLarge):
        _unpack(tmp_path, "b.zip", zip_of_zeros(64 * MiB))
    assert not (tmp_path / "bundle").exists()


def test_symlinks_count_as_copies(tmp_path: Path) -> None:
    members = [_file("coldbrew.toml", CONFIG), _file("big.bin", os.urandom(MiB))]
    members += [_special(f"l{i}.bin", tarfile.SYMTYPE, "big.bin") for i in range(10)]
    with pytest.raises(errors.BundleTooLarge):
        _unpack(tmp_path, "b.tar.gz", _tar(members))
    assert not (tmp_path / "bundle").exists()


def test_links_inside_the_bundle_are_kept(tmp_path: Path) -> None:
    members = [_file("coldbrew.toml", CONFIG), _file("handler.py", HANDLER)]
    members += [_special("alias.py", tarfile.SYMTYPE, "handler.py")]
    members += [_special("copy.py", tarfile.LNKTYPE, "handler.py")]
    root = _unpack(tmp_path, "b.tar.gz", _tar(members))
    assert (root / "alias.py").read_bytes() == HANDLER
    assert (root / "copy.py").read_bytes() == HANDLER and not (root / "copy.py").is_symlink()


def test_zip_escapes_and_links_are_refused(tmp_path: Path) -> None:
    for name in ("../evil.py", "/evil.py", "a\\..\\evil.py", "C:evil.py"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            bundle.writestr(name, b"x")
        with pytest.raises(errors.ValidationError, match="escapes"):
            _unpack(tmp_path, "b.zip", buffer.getvalue())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(link, "/etc/passwd")
    with pytest.raises(errors.ValidationError, match="not a regular file"):
        _unpack(tmp_path, "b.zip", buffer.getvalue())
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "bundle").exists()


def test_a_zip_declaring_too_many_entries_is_refused_before_it_is_read(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for i in range(MAX_FILES + 1):
            bundle.writestr(f"{i}", b"")
    with pytest.raises(errors.BundleTooLarge):
        _unpack(tmp_path, "b.zip", buffer.getvalue())


# --- memory: an upload is streamed to disk, never held (let alone twice) ------------------------


def _peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_uploads_do_not_grow_the_gateway(server: Server) -> None:
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/clear_refs", "w") as clear:
        clear.write("5")  # the peak so far (earlier tests) is forgotten: VmHWM = VmRSS now
    before = _peak_rss_kb(server.process.pid)
    chunk = os.urandom(MiB)
    body = (chunk for _ in range(36))  # 36 MB, not a zip: refused once it is received
    response = _post_chunked(server, body, params={"name": "m", "filename": "m.zip"})
    _refused(response, 400, "VALIDATION_ERROR")
    multipart = _multipart("m.zip", (chunk for _ in range(36)))
    headers = {"content-type": "multipart/form-data; boundary=BOUNDARY"}
    _refused(_post_chunked(server, multipart, headers=headers), 400, "VALIDATION_ERROR")
    grown_mb = (_peak_rss_kb(server.process.pid) - before) / 1024
    assert grown_mb < 16, f"the gateway's peak RSS grew by {grown_mb:.0f} MB"


def test_a_huge_tar_header_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A pax header declaring 64 MiB (tarfile would read it into memory whole)."""
    import gzip
    import tracemalloc

    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 64 * MiB
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as out:
        out.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        for _ in range(64):
            out.write(bytes(MiB))
        out.write(bytes(2 * tarfile.BLOCKSIZE))
    tracemalloc.start()
    try:
        with pytest.raises(errors.ValidationError, match="oversized tar header"):
            _unpack(tmp_path, "b.tar.gz", buffer.getvalue())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, f"{peak / MiB:.0f} MiB allocated"


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_tar_compressions_unpack(tmp_path: Path, mode: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in (("b/coldbrew.toml", CONFIG), ("b/handler.py", HANDLER)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    root = _unpack(tmp_path, "bundle.tar.gz", buffer.getvalue())  # the name does not matter
    assert root.name == "b" and (root / "handler.py").read_bytes() == HANDLER
