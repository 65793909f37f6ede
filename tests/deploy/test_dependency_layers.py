"""Dependency layers: requirements read, checked against the runtime, installed once by a
real pip from wheels made here (never an index), and found again by their hash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_wheels import make_wheel

from coldbrew import errors
from coldbrew.deploy.layers import (
    LAYER_INFO,
    LayerBuilder,
    PipOptions,
    read_requirements,
    runtime_packages,
    split_requirements,
)
from coldbrew.runtime.config import FunctionConfig
from coldbrew.runtime.layers import LayerError, enter_layer

PRELOAD = ["numpy", "sklearn.linear_model"]


@pytest.fixture(autouse=True)
def hermetic_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the options the builder passes: no pip.conf, no machine-wide find-links."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, "cbtest-base", "1.0", "VALUE = 41\n")
    make_wheel(
        folder,
        "cbtest-greeting",
        "1.0",
        "import cbtest_base\n\ndef hello():\n    return cbtest_base.VALUE + 1\n",
        requires=["cbtest-base>=1", "numpy>=1.20"],
    )
    make_wheel(folder, "cbtest-old-numpy", "1.0", "", requires=["numpy<2"])
    make_wheel(folder, "cycler", "0.11.0", "VERSION = 'the layer'\n")  # the runtime has 0.12
    return folder


def builder(root: Path, wheels: Path) -> LayerBuilder:
    return LayerBuilder(root, PipOptions(find_links=[str(wheels)], no_index=True), PRELOAD)


def bundle_with(folder: Path, requirements: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text(requirements)
    return folder


# --------------------------------------------------------------------------- reading


def test_requirements_from_file_and_config(tmp_path: Path) -> None:
    bundle = bundle_with(
        tmp_path,
        "# comment\nRequests[socks] >= 2  # inline comment\n\n"
        'pywin32==306; sys_platform == "win32"\n',
    )
    config = FunctionConfig(dependencies=["attrs"])
    found = [str(r) for r in read_requirements(bundle, config)]
    assert found == ["attrs", "Requests[socks]>=2"]  # the Windows-only line does not apply


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--extra-index-url http://x/simple", "pip options (--extra-index-url)"),
        ("-e ./src", "pip options (-e)"),
        ("-r other.txt", "pip options (-r)"),
        ("not a requirement!", "line 1: 'not a requirement!' is not a requirement"),
    ],
)
def test_unsupported_lines_are_refused(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(errors.DeployError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_requirements(bundle_with(tmp_path, line + "\n"), FunctionConfig())


# --------------------------------------------------------------------------- conflicts


def test_runtime_packages_are_coldbrew_and_the_preloads_with_their_dependencies() -> None:
    runtime = runtime_packages(tuple(PRELOAD))
    assert runtime["numpy"] == np.__version__
    assert {"scikit-learn", "scipy", "pydantic", "coldbrew"} <= set(runtime)
    assert "pytest" not in runtime and "torch" not in runtime  # installed, but not the runtime's


def test_a_pin_outside_coldbrews_own_range_is_refused_before_anything_installs(
    tmp_path: Path, wheels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers = builder(tmp_path / "layers", wheels)
    monkeypatch.setattr(layers, "_pip", lambda *a: pytest.fail("pip ran for a refused set"))
    with pytest.raises(errors.DeployError) as info:
        layers.prepare(
            bundle_with(tmp_path / "b", "cbtest-greeting\nnumpy==1.0.0\n"), FunctionConfig()
        )
    message = info.value.message
    assert "numpy==1.0.0" in message and f"numpy {np.__version__}" in message
    assert "conflicts with coldbrew itself" in message
    assert info.value.to_dict()["package"] == "numpy"
    assert not (tmp_path / "layers").exists()


def test_what_the_runtime_already_satisfies_needs_no_layer(tmp_path: Path, wheels: Path) -> None:
    runtime = runtime_packages(tuple(PRELOAD))
    bundle = bundle_with(tmp_path / "b", "numpy>=1.20\nscikit-learn\ncbtest-base\ncycler<0.12\n")
    remaining, replacing = split_requirements(read_requirements(bundle, FunctionConfig()), runtime)
    assert [r.name for r in remaining] == ["cbtest-base"]
    assert [str(r) for r in replacing] == ["cycler<0.12"]  # the runtime has cycler 0.12.x
    bundle = bundle_with(tmp_path / "c", "numpy>=1.20\n")
    assert builder(tmp_path / "layers", wheels).prepare(bundle, FunctionConfig()) is None


def test_another_version_of_a_runtime_package_gets_a_layer_of_its_own(
    tmp_path: Path, wheels: Path
) -> None:
    """cycler==0.11.0 against the runtime's 0.12: installed (coldbrew's own requirements still
    hold), and marked for a runtime template of its own."""
    layers = builder(tmp_path / "layers", wheels)
    layer = layers.prepare(bundle_with(tmp_path / "b", "cycler==0.11.0\n"), FunctionConfig())
    assert layer is not None and layer.own_template
    assert (Path(layer.path) / "cycler" / "__init__.py").read_text() == "VERSION = 'the layer'\n"
    shared = layers.prepare(bundle_with(tmp_path / "c", "cbtest-base\n"), FunctionConfig())
    assert shared is not None and not shared.own_template and shared.path != layer.path


def test_a_dependency_of_a_dependency_cannot_bring_another_numpy(
    tmp_path: Path, wheels: Path
) -> None:
    with pytest.raises(errors.DeployError, match="conflict") as info:
        builder(tmp_path / "layers", wheels).prepare(
            bundle_with(tmp_path / "b", "cbtest-old-numpy\n"), FunctionConfig()
        )
    assert "numpy" in info.value.message


# --------------------------------------------------------------------------- installing


def test_layer_installed_with_dependencies_then_reused(
    tmp_path: Path, wheels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers = builder(tmp_path / "layers", wheels)
    bundle = bundle_with(tmp_path / "b", "cbtest-greeting==1.0\nnumpy>=1.20\n")
    layer = layers.prepare(bundle, FunctionConfig())
    assert layer is not None and not layer.own_template
    path = layer.path
    assert Path(path).parent == tmp_path / "layers"
    names = set(os.listdir(path))
    assert {"cbtest_greeting", "cbtest_base", LAYER_INFO} <= names
    assert "numpy" not in names  # the runtime's copy serves: never a second one

    # Same set, written differently, from another bundle: the same layer, and no pip at all.
    monkeypatch.setattr(layers, "_pip", lambda *a: pytest.fail("pip ran for a cached layer"))
    other = bundle_with(tmp_path / "c", "")
    started = time.perf_counter()
    again = layers.prepare(other, FunctionConfig(dependencies=["CBTest_Greeting == 1.0"]))
    assert again is not None and again.path == path
    assert time.perf_counter() - started < 0.5


def test_a_missing_package_is_named(tmp_path: Path, wheels: Path) -> None:
    with pytest.raises(errors.DeployError, match="cannot install requirement 'cbtest-nowhere==2'"):
        builder(tmp_path / "layers", wheels).prepare(
            tmp_path, FunctionConfig(dependencies=["cbtest-nowhere==2"])
        )


def test_no_reachable_index_is_a_deploy_error_naming_the_package(tmp_path: Path) -> None:
    closed = PipOptions(index_url="http://127.0.0.1:9/simple", timeout_s=2)
    layers = LayerBuilder(tmp_path / "layers", closed, PRELOAD)
    started = time.perf_counter()
    with pytest.raises(errors.DeployError) as info:
        layers.prepare(tmp_path, FunctionConfig(dependencies=["cbtest-offline==1.0"]))
    assert "cannot install requirement 'cbtest-offline==1.0'" in info.value.message
    assert "could not reach the package index http://127.0.0.1:9/simple" in info.value.message
    assert info.value.code == "DEPLOY_ERROR"
    assert time.perf_counter() - started < 30


# --------------------------------------------------------------------------- the instance side


def test_instance_puts_the_layer_on_sys_path(tmp_path: Path, wheels: Path) -> None:
    layer = builder(tmp_path / "layers", wheels).prepare(
        bundle_with(tmp_path / "b", "cbtest-greeting\n"), FunctionConfig()
    )
    assert layer is not None
    path = layer.path
    script = textwrap.dedent(
        f"""
        from coldbrew.runtime.layers import enter_layer
        enter_layer({path!r})
        import cbtest_greeting
        print(cbtest_greeting.hello(), cbtest_greeting.__file__.startswith({path!r}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["42", "True"], done.stderr


def test_a_layer_module_already_imported_from_elsewhere_is_refused(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "numpy").mkdir(parents=True)
    (layer / "numpy" / "__init__.py").write_text("")
    with pytest.raises(LayerError, match="already imported numpy"):
        enter_layer(str(layer))
    with pytest.raises(LayerError, match="missing"):
        enter_layer(str(tmp_path / "gone"))
