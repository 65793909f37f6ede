"""The raw-ASGI request body reader (gateway/body.py ``receive_body``) against the copy it
replaced in the invoke fast path, timed side by side in one process (old, new, new, old rounds).

    python bench/body_reader.py
"""

import asyncio
import statistics
import time

from coldbrew import errors
from coldbrew.gateway.body import receive_body, too_large


async def old(  # the fast path's reader before ba02a25
    receive, headers, limit
):
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise errors.ValidationError("x")
        body += message.get("body", b"")
        if len(body) > limit:
            raise too_large(limit)
        if not message.get("more_body", False):
            return body


msg = {"type": "http.request", "body": b'{"instances": [[1,2,3,4]]}' * 4, "more_body": False}


async def receive():
    return msg


headers = {b"content-length": b"104"}


async def run(f, n=200000):
    t = time.perf_counter()
    for _ in range(n):
        await f(receive, headers, 6 << 20)
    return (time.perf_counter() - t) / n * 1e9


async def main():
    res = {"old": [], "new": []}
    for _ in range(5):
        for name, f in (("old", old), ("new", receive_body), ("new", receive_body), ("old", old)):
            res[name].append(await run(f))
    for k, v in res.items():
        print(k, "median ns/call", round(statistics.median(v)))


asyncio.run(main())
