"""Concurrent deploys of one function, from threads with their own connections."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from coldbrew.registry import Registry, VersionRecord

THREADS = 8


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _deploy_all(registry: Registry, contents: list[str]) -> list[tuple[VersionRecord, bool]]:
    """Deploy ``contents`` to function ``f`` at once, one thread each, released together."""
    barrier = threading.Barrier(len(contents))

    def deploy(content: str) -> tuple[VersionRecord, bool]:
        barrier.wait()
        return registry.create_version("f", content_sha256=sha(content), config={}, manifest={})

    with ThreadPoolExecutor(len(contents)) as pool:
        return list(pool.map(deploy, contents))


def test_concurrent_distinct_deploys_get_consecutive_numbers(registry: Registry) -> None:
    # The function does not exist yet, so its creation races too.
    results = _deploy_all(registry, [f"c{i}" for i in range(THREADS)])
    numbers = sorted(v.number for v, created in results if created)
    assert numbers == list(range(1, THREADS + 1))
    assert [v.number for v in registry.list_versions("f")] == numbers
    # latest points at whichever deploy committed last: the highest number.
    assert registry.get_function("f").latest_version == THREADS


def test_concurrent_identical_deploys_make_one_version(registry: Registry) -> None:
    results = _deploy_all(registry, ["same"] * THREADS)
    assert sum(created for _, created in results) == 1
    assert {v.number for v, _ in results} == {1}
    assert len(registry.list_versions("f")) == 1


def test_two_registries_share_one_database(make_registry: Callable[[], Registry]) -> None:
    """Two gateways (two engines, two pools) deploying at once."""
    a, b = make_registry(), make_registry()
    a.migrate()
    barrier = threading.Barrier(2)

    def deploy(reg: Registry, prefix: str) -> list[int]:
        barrier.wait()
        return [
            reg.create_version("f", content_sha256=sha(f"{prefix}{i}"), config={}, manifest={})[
                0
            ].number
            for i in range(5)
        ]

    with ThreadPoolExecutor(2) as pool:
        fa, fb = pool.submit(deploy, a, "a"), pool.submit(deploy, b, "b")
        numbers = fa.result() + fb.result()
    assert sorted(numbers) == list(range(1, 11))
