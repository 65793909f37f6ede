"""Model updates: a new version with the current version's code and config and a new model file.

``coldbrew deploy NAME --model new.joblib`` (a deploy with ``model_only``) updates a model
without a code deployment; ``alias set`` rolls it back. A bare model deployed the ordinary way
onto a function that runs a handler bundle is refused unless the caller says
``replace_handler``: it would swap the handler for the built-in model handler, and callers
that send that handler's events would get 400s.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

from coldbrew import errors
from coldbrew.registry import Registry
from coldbrew.runtime.config import BUILTIN_MODEL_HANDLER, MODEL_SUFFIXES, FunctionConfig
from coldbrew.store import ArtifactStore


class HandlerWouldBeReplaced(errors.Conflict):
    """A bare model deploy onto a function whose current version runs its own handler."""

    code = "HANDLER_WOULD_BE_REPLACED"


def check_handler_kept(registry: Registry, name: str, model_file: str) -> None:
    """Refuse a bare model deploy that would replace a bundle's handler (the caller may insist
    with ``replace_handler``)."""
    try:
        current = registry.resolve(name, None)
    except errors.NotFound:
        return  # a new function: nothing to replace
    handler = current.config.get("handler", BUILTIN_MODEL_HANDLER)
    if handler == BUILTIN_MODEL_HANDLER:
        return
    raise HandlerWouldBeReplaced(
        f"function '{name}' version {current.number} runs handler '{handler}' from a bundle; "
        f"deploying the bare model '{model_file}' would replace it with the built-in model "
        f"handler. To update only its model, keeping the code: coldbrew deploy {name} --model "
        f"{model_file}. To replace the handler anyway: add --replace-handler.",
        function=name,
        version=current.number,
        handler=handler,
    )


def model_update(
    registry: Registry,
    store: ArtifactStore,
    name: str,
    upload_dir: Path,
    model_file: str,
    trusted: bool,
    base: str | None = None,
) -> tuple[Path, FunctionConfig]:
    """A bundle folder and config for the new version: ``base`` (default: what ``latest``
    points at) with its model file replaced by ``upload_dir/model_file``.

    The new model takes the old one's place in the bundle (same folder, its own file name);
    the config is the base's with ``model`` pointing at it. Trust in pickle-based models is
    not inherited: it is given for a file, so the new file needs ``trusted`` again."""
    if PurePosixPath(model_file).suffix.lower() not in MODEL_SUFFIXES:
        raise errors.ValidationError(
            f"'{model_file}' is not a model file coldbrew knows "
            f"(suffixes: {', '.join(sorted(MODEL_SUFFIXES))})"
        )
    try:
        current = registry.resolve(name, base)
    except errors.NotFound:
        raise errors.NotFound(
            f"function '{name}'{f':{base}' if base else ''} does not exist, so there is no code "
            "to keep: deploy the model (or a bundle) without --model first",
            function=name,
        ) from None
    config = FunctionConfig.model_validate(current.config)
    bundle = upload_dir.parent / "updated"
    store.materialize(current.manifest, upload_dir.parent / "base")
    shutil.copytree(upload_dir.parent / "base", bundle)
    folder = PurePosixPath(config.model).parent if config.model else PurePosixPath(".")
    if config.model:
        (bundle / config.model).unlink(missing_ok=True)
    relative = str(folder / model_file) if str(folder) != "." else model_file
    (bundle / relative).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(upload_dir / model_file, bundle / relative)
    updated = config.model_copy(
        update={
            "model": relative,
            "model_format": "auto",
            "trust_pickle": True if trusted else None,
        }
    )
    return bundle, updated
