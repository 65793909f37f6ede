"""Receiving a deploy upload: streamed to a file on disk, counted as it arrives.

The limit (``COLDBREW_MAX_BUNDLE_BYTES``) is checked against the bytes actually received, so a
chunked upload, or one whose Content-Length lies, is stopped at the limit like any other; the
declared Content-Length only lets an honest oversized upload be refused before it is read.
Neither form holds the upload in memory: at most ``FLUSH_BYTES`` wait to be written.

A deploy is either ``multipart/form-data`` (fields ``name``, ``description``, ``trusted`` and
one ``file`` part), parsed here with python-multipart as the bytes arrive, or a raw body whose
fields are in the query string.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from coldbrew import errors

FLUSH_BYTES = 1024 * 1024
"""Received file bytes are written to disk (off the event loop) in pieces of about this size."""
MAX_FIELDS = 10
MAX_FIELD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Upload:
    name: str
    filename: str
    path: Path
    description: str = ""
    trusted: bool = False
    options: dict[str, str] = field(default_factory=dict)
    """Every small field (or query parameter), e.g. ``model_only``, ``replace_handler``."""


def truthy(value: object) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(
        f"the upload is larger than {limit / 1024 / 1024:g} MB (COLDBREW_MAX_BUNDLE_BYTES)",
        limit_bytes=limit,
    )


async def _counted(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks, raising PAYLOAD_TOO_LARGE once more than ``limit`` have arrived."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(limit)
        yield chunk


class _Spool:
    """Bytes bound for ``out``, written in large pieces from a worker thread."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pending = bytearray()

    def add(self, data: bytes) -> None:
        self.pending += data

    async def flush(self, force: bool = False) -> None:
        if len(self.pending) >= FLUSH_BYTES or (force and self.pending):
            data, self.pending = bytes(self.pending), bytearray()
            await asyncio.to_thread(self.out.write, data)


async def receive_raw(request: Request, limit: int, saved: Path) -> Upload:
    """A raw body (``?name=&filename=``) saved to ``saved``."""
    query = request.query_params
    if not query.get("filename"):
        raise errors.ValidationError(
            "raw deploy needs ?filename= (e.g. bundle.tar.gz or model.onnx)"
        )
    with saved.open("wb") as out:
        spool = _Spool(out)
        async for chunk in _counted(request, limit):
            spool.add(chunk)
            await spool.flush()
        await spool.flush(force=True)
    return Upload(
        name=query.get("name", ""),
        filename=query["filename"],
        path=saved,
        description=query.get("description", ""),
        trusted=truthy(query.get("trusted")),
        options=dict(query),
    )


class _Form:
    """python-multipart callbacks: small fields kept, the one file part sent to a spool."""

    def __init__(self, spool: _Spool) -> None:
        self.spool = spool
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._field: str | None = None
        self._value = bytearray()
        self._in_file = False
        self._parts = 0

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": lambda d, s, e: self._header_name.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_FIELDS:
            raise errors.ValidationError(f"a deploy form has at most {MAX_FIELDS} fields")
        self._disposition, self._field, self._value, self._in_file = b"", None, bytearray(), False

    def on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name, self._header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise errors.ValidationError("every form part needs a Content-Disposition name")
        self._field = name.decode("utf-8", "replace")
        if b"filename" in options:
            if self._field != "file" or self.filename is not None:
                raise errors.ValidationError("a deploy form has one file part, named 'file'")
            self.filename = options[b"filename"].decode("utf-8", "replace")
            self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.spool.add(data[start:end])
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise errors.ValidationError(
                f"form field {self._field!r} is longer than {MAX_FIELD_BYTES // 1024} KB"
            )

    def on_part_end(self) -> None:
        if not self._in_file and self._field is not None:
            self.fields[self._field] = self._value.decode("utf-8", "replace")


async def receive_multipart(request: Request, limit: int, saved: Path) -> Upload:
    """A ``multipart/form-data`` deploy, its file part saved to ``saved``."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise errors.ValidationError("multipart deploy without a boundary in its Content-Type")
    with saved.open("wb") as out:
        form = _Form(_Spool(out))
        parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
        try:
            async for chunk in _counted(request, limit):
                parser.write(chunk)
                await form.spool.flush()
            parser.finalize()
        except MultipartParseError as exc:
            raise errors.ValidationError(f"malformed multipart deploy: {exc}") from None
        await form.spool.flush(force=True)
    if not form.filename:
        raise errors.ValidationError("multipart deploy needs a 'file' part with a filename")
    return Upload(
        name=form.fields.get("name", ""),
        filename=form.filename,
        path=saved,
        description=form.fields.get("description", ""),
        trusted=truthy(form.fields.get("trusted")),
        options=dict(form.fields),
    )


async def receive_upload(request: Request, limit: int, saved: Path) -> Upload:
    """The deploy's fields, its file saved to ``saved`` (at most ``limit`` bytes received)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await receive_multipart(request, limit, saved)
    return await receive_raw(request, limit, saved)
