"""Dependency layers: a bundle's extra packages, installed once at deploy and shared.

A bundle names its packages in ``requirements.txt`` and/or ``dependencies = [...]`` in its
coldbrew.toml. At deploy each requirement is one of:

- satisfied by the runtime (coldbrew's own dependencies and the libraries the runtime template
  preloads, with theirs): used as it is, never installed again;
- a package the runtime lacks: resolved by pip with the runtime's packages held at their
  versions (passed as constraints, so a dependency of a dependency cannot pull another numpy
  either), and what that adds is installed with ``pip install --target`` into
  ``<home>/layers/<sha256>``;
- another version of a package the runtime has (``numpy==1.26.4`` against the runtime's 2.x):
  the shared runtime template imported its numpy before any version existed and a fork cannot
  swap it, so the layer gets the replacement (resolved together with coldbrew's own
  requirements, which must still hold) and is marked ``own_template``: the version's instances
  fork from a runtime template of its own, started with the layer first on its path
  (``backends/local.py``). An exact pin outside coldbrew's own range (``numpy==1.0.0``) is
  refused before anything is installed (DEPLOY_ERROR naming the package and both versions).

The folder name is the sha256 of the normalised requirements to install, the Python version,
the runtime's package versions and the kind of template: versions with the same set share one
layer, and a second deploy finds it and runs no pip. Wheels only (``--only-binary=:all:``):
building an sdist would run the package's own code as the gateway's user. The instance puts
the layer on ``sys.path`` right after the bundle folder (``coldbrew.runtime.layers``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from coldbrew import errors
from coldbrew.runtime.config import FunctionConfig
from coldbrew.settings import Settings

__all__ = ["Layer", "LayerBuilder", "PipOptions", "read_requirements", "runtime_packages"]

log = logging.getLogger("coldbrew.deploy")
REQUIREMENTS_FILE = "requirements.txt"
LAYER_INFO = "coldbrew-layer.json"
PIP_DEADLINE_S = 900.0


@dataclass(frozen=True)
class PipOptions:
    """Where pip looks for packages (the server's settings; a bundle cannot choose)."""

    index_url: str | None = None
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    timeout_s: float = 15.0

    def args(self) -> list[str]:
        args = ["--timeout", f"{self.timeout_s:g}", "--retries", "1"]
        if self.index_url:
            args += ["--index-url", self.index_url]
        if self.no_index:
            args.append("--no-index")
        for link in self.find_links:
            args += ["--find-links", link]
        return args

    def where(self) -> str:
        if self.no_index:
            return f"the wheel folders {', '.join(self.find_links) or '(none given)'}"
        return f"the package index {self.index_url}" if self.index_url else "the package index"


# --------------------------------------------------------------------------- requirements


def read_requirements(bundle: Path, config: FunctionConfig) -> list[Requirement]:
    """The bundle's requirements (``dependencies`` then ``requirements.txt``) that apply to this
    interpreter (environment markers evaluated). Raises DeployError for a line pip would need
    options for: the server's settings choose the index, not the bundle."""
    lines = [(f"dependencies[{i}]", line) for i, line in enumerate(config.dependencies)]
    path = bundle / REQUIREMENTS_FILE
    if path.is_file():
        text = path.read_text(errors="replace")
        lines += [
            (f"{REQUIREMENTS_FILE} line {n}", ln) for n, ln in enumerate(text.splitlines(), 1)
        ]
    found: list[Requirement] = []
    for where, raw in lines:
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            raise errors.DeployError(
                f"{where}: pip options ({line.split()[0]}) are not supported in a bundle; the "
                "server's COLDBREW_PIP_* settings choose where packages come from"
            )
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise errors.DeployError(f"{where}: {line!r} is not a requirement: {exc}") from None
        if requirement.marker is None or requirement.marker.evaluate():
            found.append(requirement)
    return found


def _normalized(requirement: Requirement) -> str:
    requirement = Requirement(str(requirement))
    requirement.name = canonicalize_name(requirement.name)
    requirement.marker = None  # already evaluated
    return str(requirement)


# --------------------------------------------------------------------------- the runtime's packages


def _distributions_of(modules: list[str]) -> set[str]:
    owners = metadata.packages_distributions()
    return {dist for name in modules for dist in owners.get(name.split(".")[0], [])}


@lru_cache(maxsize=8)
def runtime_packages(preload: tuple[str, ...]) -> dict[str, str]:
    """{canonical name: version} of what every instance already has imported or may import
    from the runtime: coldbrew and its dependencies, and the preloaded libraries with theirs."""
    pending = ["coldbrew", *sorted(_distributions_of(list(preload)))]
    found: dict[str, str] = {}
    while pending:
        name = pending.pop()
        key = canonicalize_name(name)
        if key in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed
        found[key] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


@lru_cache(maxsize=1)
def coldbrew_requirements() -> tuple[Requirement, ...]:
    """coldbrew's own requirements (no extras): what a replacement must still satisfy."""
    found = []
    for line in metadata.requires("coldbrew") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            requirement.marker = None
            found.append(requirement)
    return tuple(found)


def split_requirements(
    requirements: list[Requirement], runtime: dict[str, str]
) -> tuple[list[Requirement], list[Requirement]]:
    """(requirements the runtime lacks, requirements that replace a runtime package's version);
    those the runtime already satisfies are in neither. Raises DeployError for an exact pin
    outside what coldbrew itself needs: no runtime, shared or own, could serve it."""
    own = {canonicalize_name(r.name): r for r in coldbrew_requirements()}
    remaining, replacing = [], []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        have = runtime.get(name)
        if have is None:
            remaining.append(requirement)
        elif not requirement.specifier.contains(have, prereleases=True):
            needed = own.get(name)
            pins = [s.version for s in requirement.specifier if s.operator in ("==", "===")]
            if needed is not None and any(not needed.specifier.contains(v) for v in pins):
                raise errors.DeployError(
                    f"requirement '{requirement}' conflicts with coldbrew itself, which needs "
                    f"{needed} (the runtime has {requirement.name} {have}); accept a version "
                    "in that range or drop the pin",
                    package=requirement.name,
                    requested=str(requirement.specifier),
                    runtime_version=have,
                )
            replacing.append(requirement)
    return remaining, replacing


@dataclass(frozen=True)
class Layer:
    """Where a version's packages are, and whether they replace some of the runtime's."""

    path: str
    own_template: bool
    """The layer holds another version of a package the runtime template preloads: this
    version's instances fork from a runtime template of their own, started with the layer first
    on its path, never from the shared one (whose numpy was imported before any version)."""


# --------------------------------------------------------------------------- building


class LayerBuilder:
    """Installs and finds layers under ``root``. Blocking: call it from a worker thread."""

    def __init__(self, root: Path, pip: PipOptions, preload: list[str]) -> None:
        self.root = root
        self.pip = pip
        self.preload = tuple(preload)

    @classmethod
    def from_settings(cls, settings: Settings) -> LayerBuilder:
        pip = PipOptions(
            index_url=settings.pip_index_url,
            find_links=list(settings.pip_find_links),
            no_index=settings.pip_no_index,
            timeout_s=settings.pip_timeout_s,
        )
        return cls(settings.home / "layers", pip, list(settings.preload_modules))

    def prepare(self, bundle: Path, config: FunctionConfig) -> Layer | None:
        """The layer this version needs (installed now if it is not yet), or None when the
        bundle asks for nothing the runtime does not have."""
        requirements = read_requirements(bundle, config)
        if not requirements:
            return None
        runtime = runtime_packages(self.preload)
        remaining, replacing = split_requirements(requirements, runtime)
        if not remaining and not replacing:
            return None
        wanted = sorted({_normalized(r) for r in remaining + replacing})
        own = bool(replacing)
        layer = self.root / self.key(wanted, runtime, own)
        if not (layer / LAYER_INFO).is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o755)  # instances of every function read layers
            with self._locked(layer.name):
                if not (layer / LAYER_INFO).is_file():  # built meanwhile by another deploy?
                    self._build(layer, wanted, runtime, own)
        return Layer(str(layer), own)

    @staticmethod
    def key(wanted: list[str], runtime: dict[str, str], own: bool = False) -> str:
        digest = hashlib.sha256()
        digest.update(b"own template\n" if own else b"shared template\n")
        digest.update(
            f"{sys.implementation.cache_tag} {sys.platform} {os.uname().machine}\n".encode()
        )
        digest.update("\n".join(wanted).encode() + b"\n--\n")
        digest.update("\n".join(f"{k}=={v}" for k, v in sorted(runtime.items())).encode())
        return digest.hexdigest()

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """One builder per layer across every gateway sharing this home."""
        with open(self.root / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _build(self, layer: Path, wanted: list[str], runtime: dict[str, str], own: bool) -> None:
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))
        try:
            if own:
                # Another numpy (say): coldbrew's own requirements must still hold, and the
                # runtime's other packages are replaced too where they do not accept it.
                packages = self._resolve(wanted, [str(r) for r in coldbrew_requirements()])
            else:
                constraints = work / "runtime-constraints.txt"
                pins = "".join(f"{k}=={v}\n" for k, v in sorted(runtime.items()))
                constraints.write_text(pins)
                packages = self._resolve(wanted, ["-c", str(constraints)])
            target = work / "layer"
            target.mkdir()
            if packages:
                pins = [f"{name}=={version}" for name, version in packages]
                self._pip(["install", "--target", str(target), "--no-deps", *pins], wanted)
            info = {
                "requirements": wanted,
                "installed": [f"{n}=={v}" for n, v in packages],
                "own_template": own,
            }
            (target / LAYER_INFO).write_text(json.dumps(info, indent=2) + "\n")
            _readable(target)
            os.rename(target, layer)
            log.info("dependency layer %s: %s", layer.name[:12], ", ".join(info["installed"]))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _resolve(self, wanted: list[str], extra: list[str]) -> list[tuple[str, str]]:
        """(name, version) of every package pip would add to (or change in) the runtime's
        environment for ``wanted``; ``extra``: more pip arguments (constraints, requirements)."""
        output = self._pip(
            ["install", "--dry-run", "--quiet", "--report", "-", *extra, *wanted], wanted
        )
        try:
            report = json.loads(output[output.index("{") :])
        except ValueError:
            raise errors.DeployError("pip gave no resolution report for the requirements") from None
        return sorted(
            (item["metadata"]["name"], item["metadata"]["version"]) for item in report["install"]
        )

    def _pip(self, args: list[str], wanted: list[str]) -> str:
        command = [
            sys.executable,
            "-m",
            "pip",
            *args,
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            *self.pip.args(),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_DEADLINE_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise errors.DeployError(
                f"installing the requirements took longer than {PIP_DEADLINE_S:g} s"
            ) from None
        if done.returncode != 0:
            raise pip_failure(done.stderr, wanted, self.pip)
        return done.stdout


def pip_failure(stderr: str, wanted: list[str], pip: PipOptions) -> errors.DeployError:
    """A DeployError that names the package pip could not get, and says why in plain words."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors_only = [ln for ln in lines if ln.startswith("ERROR:")] or lines[-3:]
    said = " ".join(ln.removeprefix("ERROR: ") for ln in errors_only)[:600]
    missing = re.search(r"No matching distribution found for ([^\s;]+)", stderr)
    if missing:
        package = missing.group(1)
        unreachable = re.search(
            r"(NewConnectionError|Connection refused|Max retries exceeded|timed out|"
            r"Name or service not known|Temporary failure in name resolution)",
            stderr,
        )
        why = (
            f"could not reach {pip.where()}"
            if unreachable
            else f"no wheel of it for this server in {pip.where()}"
        )
        return errors.DeployError(
            f"cannot install requirement '{package}': {why} (pip: {said})", package=package
        )
    if "ResolutionImpossible" in stderr or "conflict" in stderr.lower():
        return errors.DeployError(
            "the requirements conflict with each other or with the runtime's own packages "
            f"({', '.join(wanted)}); pip: {said}"
        )
    return errors.DeployError(f"installing the requirements failed; pip: {said}")


def _readable(folder: Path) -> None:
    """World-readable: the layer is public packages, read by instances of any function's uid."""
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)
