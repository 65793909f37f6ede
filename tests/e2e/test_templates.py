"""Version templates: after a version's first cold start, its next cold starts are forks of a
process that already holds the model. Every format must give correct answers from such forks,
and none may hang (a template with a live thread pool would deadlock its children)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_deploy import IRIS, model_files

from support import Server


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    return model_files(tmp_path_factory.mktemp("models"))


def wait_for(predicate, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def pools(server: Server, name: str) -> list[dict]:
    return server.client.get(f"/v1/functions/{name}").json()["pools"]


@pytest.mark.parametrize("fmt", ["joblib", "skops", "onnx", "xgboost-json", "xgboost-joblib"])
def test_cold_starts_fork_from_version_template(
    server: Server, models: dict, fmt: str, tmp_path: Path
) -> None:
    path, model = models[fmt]
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / path.name).write_bytes(path.read_bytes())
    (bundle / "coldbrew.toml").write_text(
        f'model = "{path.name}"\nidle_timeout_s = 0.5\nmax_instances = 4\n'
    )
    name = f"tpl-{fmt}"
    assert server.deploy_folder(name, bundle).status_code == 201
    rows = IRIS.data[[0, 75, 149]]
    expected = [int(p) for p in model.predict(rows)]  # type: ignore[attr-defined]

    first = server.invoke(name, {"instances": rows.tolist()})
    assert first.json()["predictions"] == expected
    assert first.headers["x-coldbrew-start-source"].startswith("runtime-template")
    wait_for(lambda: any(p["version_template"] for p in pools(server, name)))
    wait_for(lambda: not any(p["instances"] for p in pools(server, name)))

    with ThreadPoolExecutor(4) as executor:
        responses = list(
            executor.map(
                lambda _: server.invoke(name, {"instances": rows.tolist()}, timeout=20), range(8)
            )
        )
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected
        assert np.allclose(response.json()["probabilities"], model.predict_proba(rows), atol=1e-4)  # type: ignore[attr-defined]
    cold = [r for r in responses if r.headers["x-coldbrew-cold-start"] == "true"]
    assert cold, "scale from zero must be a cold start"
    # Forked with the model already loaded: no model load in the init phase, and where the
    # time went is in the headers and in the function's description.
    assert any(r.headers["x-coldbrew-start-source"].startswith("version-template") for r in cold)
    for response in cold:
        assert float(response.headers["x-coldbrew-fork-ms"]) >= 0
        assert float(response.headers["x-coldbrew-queue-ms"]) >= 0
    recent = [c for p in pools(server, name) for c in p["recent_cold_starts"]]
    assert {"source", "fork_ms", "init_ms", "start_ms", "queue_ms", "first_invocation_ms"} <= set(
        recent[-1]
    )
    for response in cold:
        assert (
            float(response.headers["x-coldbrew-init-duration-ms"])
            < float(first.headers["x-coldbrew-init-duration-ms"]) + 50
        )


def test_template_goes_with_the_function(server: Server, models: dict) -> None:
    path, _ = models["onnx"]
    assert server.deploy_file("tpl-doomed", path).status_code == 201
    assert server.invoke("tpl-doomed", {"instances": IRIS.data[:1].tolist()}).status_code == 200
    wait_for(lambda: any(p["version_template"] for p in pools(server, "tpl-doomed")))
    assert server.client.delete("/v1/functions/tpl-doomed").status_code == 200
    assert server.invoke("tpl-doomed", {}).status_code == 404


def test_forks_of_version_templates_are_memory_limited(server: Server, models: dict) -> None:
    """Version templates replace their environment with the function's; their forks must still
    find the memory cgroup root and join a group of their own, limited to memory_mb."""
    if not any("coldbrew-" in p.name for p in Path("/sys/fs/cgroup/memory").rglob("coldbrew-*")):
        pytest.skip("no memory cgroups on this machine (memory is sampled instead)")
    path, _ = models["onnx"]
    bundle = path.parent / "limited"
    bundle.mkdir(exist_ok=True)
    (bundle / path.name).write_bytes(path.read_bytes())
    (bundle / "coldbrew.toml").write_text(
        f'model = "{path.name}"\nmemory_mb = 300\nidle_timeout_s = 0.3\n'
    )
    assert server.deploy_folder("tpl-limited", bundle).status_code == 201
    row = {"instances": IRIS.data[:1].tolist()}
    assert server.invoke("tpl-limited", row).status_code == 200
    wait_for(lambda: any(p["version_template"] for p in pools(server, "tpl-limited")))
    wait_for(lambda: not any(p["instances"] for p in pools(server, "tpl-limited")))
    response = server.invoke("tpl-limited", row)
    assert response.headers["x-coldbrew-start-source"].startswith("version-template")
    [instance] = server.instances("tpl-limited")
    membership = Path(f"/proc/{instance['pid']}/cgroup").read_text()
    memory_line = next(line for line in membership.splitlines() if ":memory:" in line)
    group = Path("/sys/fs/cgroup/memory") / memory_line.split(":", 2)[2].lstrip("/")
    assert "coldbrew-" in str(group)
    assert int((group / "memory.limit_in_bytes").read_text()) == 300 << 20
