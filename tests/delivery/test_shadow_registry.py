"""A shadow's configuration is in the registry: it survives a gateway restart, every mirror
over the same registry applies the same set, and it goes with its function."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from coldbrew.delivery.shadow import ShadowConfig, ShadowMirror
from coldbrew.registry import Registry
from coldbrew.registry.shadows import ShadowStore
from support import Server, wait_for, write_bundle

PRIMARY = "def handler(event, context):\n    return {'label': 'a'}\n"
CANDIDATE = "def handler(event, context):\n    return {'label': 'b'}\n"
CONFIG = "handler = 'handler:handler'\n"
BASE = "/v1/functions/shade/shadow"


def _mirror(store: ShadowStore) -> ShadowMirror:
    """A mirror over ``store`` whose data plane has no pools (nothing is invoked here)."""
    backend = SimpleNamespace(settings=SimpleNamespace(backend="local"))
    plane = SimpleNamespace(scheduler=SimpleNamespace(backend=backend, pools={}), shadows={})
    return ShadowMirror(plane, store=store)  # type: ignore[arg-type]


def test_mirrors_over_one_registry_apply_the_same_shadows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = Registry(url)
    registry.migrate()
    for sha in ("a" * 64, "b" * 64):
        registry.create_version("f", content_sha256=sha, config={}, manifest={})

    async def scenario() -> None:
        one, other = _mirror(ShadowStore(url)), _mirror(ShadowStore(url))
        config = ShadowConfig("f", "latest", 2, 0.5, priority="normal")
        await one.put(config)
        assert ("f", "latest") not in other.configs
        await other.refresh()  # what its periodic pass does
        assert other.configs[("f", "latest")] == config
        assert set(other.dataplane.shadows) == {("f", "latest"), ("f", None), ("f", "$LATEST")}

        other.stats[("f", "latest")].mirrored = 7  # this gateway's counts...
        await other.refresh()
        assert other.stats[("f", "latest")].mirrored == 7  # ...kept while nothing changes
        await one.put(ShadowConfig("f", "latest", 1, 1.0, priority="normal"))
        await other.refresh()
        assert other.configs[("f", "latest")].version == 1
        assert other.stats[("f", "latest")].mirrored == 0  # set again: counts start again

        assert await other.delete("f") == ["f:latest"]  # gone from the registry...
        await one.refresh()
        assert one.configs == {} and one.dataplane.shadows == {}  # ...so from every gateway

        await one.put(ShadowConfig("f", "latest", 2, 1.0))
        registry.delete_function("f")  # its shadows go with it (ON DELETE CASCADE)
        assert one.store is not None and one.store.all() == []
        await one.refresh()
        assert one.configs == {}
        await one.stop()
        await other.stop()

    asyncio.run(scenario())
    registry.close()


def test_a_shadow_survives_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Server(home)
    server.start()
    try:
        for n, code in ((1, PRIMARY), (2, CANDIDATE)):
            folder = write_bundle(tmp_path / f"v{n}", code, CONFIG)
            assert server.deploy_folder("shade", folder).status_code in (200, 201)
        assert server.client.put("/v1/functions/shade/aliases/prod", json={"version": 1}).is_success
        body = {"version": 2, "alias": "prod", "priority": "normal", "ignore": ["label"]}
        assert server.client.put(BASE, json=body).status_code == 200
    finally:
        server.stop()

    server = Server(home)  # the same COLDBREW_HOME: the same registry
    server.start()
    try:
        (shadow,) = server.client.get(BASE).json()["shadows"]
        assert (shadow["alias"], shadow["version"], shadow["priority"]) == ("prod", 2, "normal")
        assert shadow["ignore"] == ["label"] and shadow["mirrored"] == 0  # counts: this gateway's
        for n in range(1, 4):  # each waits for the previous copy: the candidate has room
            assert server.invoke("shade:prod", {}).json() == {"label": "a"}
            wait_for(lambda n=n: _shadow(server)["mirrored"] >= n, 10, f"copy {n} mirrored")
        shadow = _shadow(server)
        assert shadow["mirrored"] == 3 and shadow["agreement_rate"] == 1.0, shadow  # label ignored

        assert server.client.delete("/v1/functions/shade").is_success
        store = ShadowStore(f"sqlite:///{home / 'registry.db'}")
        try:
            assert store.all() == []  # the function's shadows went with it
        finally:
            store.close()
    finally:
        server.stop()


def _shadow(server: Server) -> dict:
    (shadow,) = server.client.get(BASE).json()["shadows"]
    return shadow
