"""``GET /v1/nodes`` and ``coldbrew nodes`` on one gateway without Redis: this machine, this
gateway alone, with its pid, uptime, instances and templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support import Server, write_bundle


def test_one_gateway_is_its_own_whole_cluster(server: Server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle = write_bundle(
        tmp_path / "n", "def handler(e, c):\n    return 1\n", "handler = 'handler:handler'\n"
    )
    assert server.deploy_folder("nodes-fn", bundle).status_code == 201
    assert server.invoke("nodes-fn", {}).status_code == 200
    answer = server.client.get("/v1/nodes").json()
    assert answer["shared"] is False
    [node] = answer["nodes"]
    [gateway] = node["gateways"]
    assert gateway["id"] == answer["gateway"]
    assert gateway["pid"] == server.process.pid  # type: ignore[union-attr]
    assert gateway["worker"] is None and gateway["uptime_s"] > 0
    assert gateway["instances"] >= 1 and "nodes-fn" in gateway["functions"]
    assert gateway["templates"] >= 1 and node["instances"] == gateway["instances"]

    cli = subprocess.run(
        [sys.executable, "-m", "coldbrew.cli.main", "nodes", "--url", server.url, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["nodes"][0]["gateways"][0]["pid"] == gateway["pid"]
    table = subprocess.run(
        [sys.executable, "-m", "coldbrew.cli.main", "nodes", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0 and str(gateway["pid"]) in table.stdout
