"""Where the DeiT head's ImageNet DeiT-B weights come from, and what a run records about them.

The first two studies append an ImageNet-supervised DeiT-B to the backbone (study 1 @02db977:
``params.json`` ``model_params``: ``backbone_type "deit_base"``, ``pretrained true``,
``transformers_params.pretrained_type "supervised"``), so the DeiT head starts from
``deit_base_patch16_224.fb_in1k`` by default. ``--deit-weights`` chooses:

- omitted (or ``imagenet``): that checkpoint, found as a local file — ``$MEDFM_DEIT_WEIGHTS`` (a file
  or a folder), then the weights folder medfm uses for every local checkpoint (``$MEDFM_WEIGHTS`` or
  ``../shared/weights``: a file or folder named after the checkpoint), then the Hugging Face / torch.hub
  caches — or downloaded from the hub when online. Offline with none of those: one error line saying
  how to pass the file or choose random init, never a silent random init.
- ``PATH``: that checkpoint (timm keys; a ``model`` / ``state_dict`` wrapper is unwrapped).
- ``random``: random init (seeded by the run's seed), chosen explicitly.

``DeitInit.identity()`` (``random`` or the file's sha256) goes into the run key and the run identity,
so rows with and without ImageNet init never share a key and are never averaged together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medfm.backbones.weights import HubSource, resolve_weights, sha256_file, weights_file_in
from medfm.errors import MedfmError
from medfm.paths import find_weights_root

RANDOM = "random"
IMAGENET = "imagenet"
DEIT_ENV = "MEDFM_DEIT_WEIGHTS"
DEIT_ID = "deit_base_patch16_224.fb_in1k"  # timm's name: the checkpoint the studies' DeiT-B starts from
# the official files (timm's pretrained config of DEIT_ID): the hub copy, and Meta's original URL
DEIT_HUB = HubSource(hf_repo=f"timm/{DEIT_ID}", hf_files=("model.safetensors", "pytorch_model.bin"),
                     url="https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth")
# names under the weights folder that hold it (file or folder), most specific first
LOCAL_NAMES = (DEIT_ID, f"{DEIT_ID}.safetensors", f"{DEIT_ID}.pth", "deit_base_patch16_224-b5f2ef4d.pth",
               "deit_base_patch16_224.safetensors", "deit_base_patch16_224.pth", "deit_base_patch16_224")
HOW_TO = f"pass --deit-weights PATH to a {DEIT_ID} checkpoint (or set ${DEIT_ENV}), or choose --deit-weights random explicitly"


@dataclass(frozen=True)
class DeitInit:
    """The DeiT head's resolved start: ``kind`` 'random' or 'file'; ``origin`` says where the file came from."""

    kind: str
    path: Path | None = None
    sha256: str | None = None
    origin: str = RANDOM

    def identity(self) -> str:
        """What a run key / identity holds: 'random', or the exact bytes loaded ('sha256:<hex>')."""
        return RANDOM if self.kind == RANDOM else f"sha256:{self.sha256}"

    @property
    def label(self) -> str:
        """For the record's hyper-parameters: random, imagenet (the default checkpoint) or file (a user's own)."""
        if self.kind == RANDOM:
            return RANDOM
        return IMAGENET if self.origin.startswith(("imagenet", "hf-hub", "http")) else "file"


def resolve_deit_weights(choice: str | None) -> DeitInit:
    """Turn ``--deit-weights`` into a DeiT-B start (a file hashed, or random init)."""
    if choice == RANDOM:
        return DeitInit(RANDOM)
    if choice not in (None, IMAGENET):
        path = _file(Path(choice).expanduser(), "--deit-weights")
        return DeitInit("file", path.resolve(), sha256_file(path), f"local:{path.name}")
    local = _local_copy()
    if local is not None:
        path, where = local
        return DeitInit("file", path.resolve(), sha256_file(path), f"imagenet:{where}")
    try:
        found = resolve_weights(None, "deit head", DEIT_HUB)
    except MedfmError as exc:
        raise MedfmError(
            f"the deit head starts from ImageNet {DEIT_ID} by default, and no local copy was found "
            f"(${DEIT_ENV}, {_weights_root_text()}, the Hugging Face and torch.hub caches) nor downloaded: {exc.problem}",
            HOW_TO) from None
    return DeitInit("file", found.path, found.sha256, found.origin)


def _file(path: Path, where: str) -> Path:
    try:
        return weights_file_in(path)
    except MedfmError as exc:
        raise MedfmError(f"{where}: {exc.problem}", HOW_TO) from None


def _local_copy() -> tuple[Path, str] | None:
    """The checkpoint in ``$MEDFM_DEIT_WEIGHTS`` (which must exist when set) or in the weights folder."""
    env = os.environ.get(DEIT_ENV)
    if env:
        return _file(Path(env).expanduser(), f"${DEIT_ENV}"), f"${DEIT_ENV}"
    root = find_weights_root()
    if root is None:
        return None
    for name in LOCAL_NAMES:
        if (root / name).exists():
            return _file(root / name, str(root)), f"{root.name}/{name}"
    return None


def _weights_root_text() -> str:
    root = find_weights_root()
    return f"the weights folder {root}" if root is not None else "no weights folder ($MEDFM_WEIGHTS, ../shared/weights)"


def with_deit_identity(settings: dict) -> dict:
    """A run's settings with ``deit_weights`` replaced by what it resolves to, for the deit head.

    For the deit head an omitted ``--deit-weights`` now means ImageNet init (it meant random init before),
    so the run key and identity hold the resolved start ('random' or the file's sha256), never the bare
    option: a stored random-init row is never taken for an ImageNet-init one. Other heads' settings are
    returned unchanged (their keys and identities stay what they were).
    """
    if settings.get("head") != "deit":
        return settings
    return {**settings, "deit_weights": resolve_deit_weights(settings.get("deit_weights")).identity()}
