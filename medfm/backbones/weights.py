"""Resolving ``--weights`` to something a loader can build from, with a checksum for the cache.

Every pretrained load goes through a local file: ``--weights PATH`` names it, and the default
(official weights) finds it in a verified offline copy (e.g. a pip package), the Hugging Face or
torch.hub cache, or downloads it there first. So hub and air-gapped runs share one code path, and
the fingerprint always holds the sha256 of the exact bytes that were loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from medfm.errors import MedfmError

RANDOM = "random"
PRETRAINED = "pretrained"
RANDOM_INIT_SEED = 0
# Files that hold weights in a folder, most specific first (HF / timm / open_clip layouts).
FOLDER_FILES = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


@dataclass(frozen=True)
class HubSource:
    """Where the official weights live: a Hugging Face repo and/or a plain URL."""

    hf_repo: str | None = None
    hf_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    url: str | None = None

    def describe(self) -> str:
        return f"hf-hub:{self.hf_repo}" if self.hf_repo else str(self.url)


@dataclass(frozen=True)
class PackageFile:
    """An exact offline copy of official weights shipped inside a pip package."""

    package: str
    relpath: str
    sha256_prefix: str  # checked before use: only a byte-identical copy may stand in for the hub
    install: str  # what to tell the user to run

    def locate(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        return path if path.is_file() else None


@dataclass(frozen=True)
class Weights:
    """Resolved weights: ``kind`` is 'random' or 'file'; ``origin`` says where the file came from."""

    kind: str
    path: Path | None
    sha256: str | None
    origin: str  # 'random:seed=0', 'local:<file name>', 'hf-hub:timm/...', 'package:fdet_...'

    def identity(self) -> dict:
        return {"kind": self.kind, "sha256": self.sha256, "origin": self.origin}


def sha256_file(path: Path, _memo: dict = {}) -> str:  # noqa: B006 - deliberate per-process memo
    key = (str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _memo[key] = h.hexdigest()
    return _memo[key]


def weights_file_in(path: Path) -> Path:
    """The checkpoint file a user means by ``path`` (a file, or a folder in a known layout)."""
    if path.is_file():
        return path
    if path.is_dir():
        for name in FOLDER_FILES:
            if (path / name).is_file():
                return path / name
        found = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if len(found) == 1:
            return found[0]
        raise MedfmError(
            f"weights folder {path} holds {len(found)} checkpoint files, not one of {', '.join(FOLDER_FILES)}",
            "pass --weights the checkpoint file itself",
        )
    raise MedfmError(f"weights file {path} does not exist", "check the --weights path (or use --weights random)")


def resolve_weights(spec: str | None, backbone: str, hub: HubSource | None, offline_copies=()) -> Weights:
    """Turn the ``--weights`` value into a local file (downloading official weights if needed)."""
    if spec == RANDOM:
        return Weights(RANDOM, None, None, f"random:seed={RANDOM_INIT_SEED}")
    if spec not in (None, PRETRAINED):
        path = weights_file_in(Path(spec).expanduser())
        return Weights("file", path.resolve(), sha256_file(path), f"local:{path.name}")
    for copy in offline_copies:
        path = copy.locate()
        if path is not None:
            digest = sha256_file(path)
            if not digest.startswith(copy.sha256_prefix):
                raise MedfmError(
                    f"{path} (from pip package {copy.package}) is not the official file: sha256 {digest[:12]}…",
                    f"reinstall it: {copy.install}",
                )
            return Weights("file", path, digest, f"package:{copy.package}")
    if hub is None:
        raise MedfmError(
            f"backbone {backbone!r} has no official pretrained weights source",
            "pass --weights PATH to a checkpoint, or --weights random",
        )
    path = _download(hub, backbone)
    return Weights("file", path, sha256_file(path), hub.describe())


def _offline_error(backbone: str, source: str, reason: str, filename: str | None = None) -> MedfmError:
    if filename is not None:  # a config file: even --weights random needs it, so only a local folder helps
        return MedfmError(
            f"cannot download {filename} of {backbone!r} from {source} ({reason}); this machine looks offline",
            f"pass --weights PATH to the repo folder downloaded elsewhere ({filename} beside the weights); "
            "--weights random needs the file too",
        )
    return MedfmError(
        f"cannot download the pretrained weights of {backbone!r} from {source} ({reason}); this machine looks offline",
        "pass --weights PATH to a local copy of the checkpoint (file or folder), or --weights random",
    )


def _reachable(url: str, timeout: float = 5.0) -> str | None:
    """None if a TCP connection to the URL's host works, else the reason it does not.

    Checked before any download so an offline machine fails in seconds, not after the minute of
    retries huggingface_hub would spend. ``MEDFM_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) means offline.
    """
    for var in ("MEDFM_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout).close()
        return None
    except OSError as exc:
        return f"{parsed.hostname}: {exc.strerror or exc}"


def _download(hub: HubSource, backbone: str) -> Path:
    if hub.hf_repo:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

        for name in hub.hf_files:
            cached = try_to_load_from_cache(hub.hf_repo, name)
            if isinstance(cached, str):
                return Path(cached)
        reason = _reachable(constants.ENDPOINT)
        if reason is None:
            from huggingface_hub.errors import EntryNotFoundError

            for name in hub.hf_files:
                try:
                    return Path(hf_hub_download(hub.hf_repo, name))
                except EntryNotFoundError:
                    continue
                except Exception as exc:  # network trouble mid-way; same advice applies
                    raise _offline_error(backbone, hub.describe(), f"{type(exc).__name__}: {exc}") from None
            raise MedfmError(f"no weights file found in {hub.describe()}", "pass --weights PATH")
        if not hub.url:
            raise _offline_error(backbone, hub.describe(), reason)
    import torch.hub

    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(hub.url).path)
    if target.is_file():
        return target
    reason = _reachable(hub.url)
    if reason is not None:
        raise _offline_error(backbone, hub.url, reason)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(hub.url, str(target), progress=True)
    except Exception as exc:
        raise _offline_error(backbone, hub.url, f"{type(exc).__name__}: {exc}") from None
    return target


def local_weights(hub: HubSource | None, offline_copies=()) -> str | None:
    """Where the official weights already lie on this machine (no download, no hashing), or None."""
    for copy in offline_copies:
        if copy.locate() is not None:
            return f"package:{copy.package}"
    if hub is None:
        return None
    if hub.hf_repo:
        from huggingface_hub import try_to_load_from_cache

        if any(isinstance(try_to_load_from_cache(hub.hf_repo, name), str) for name in hub.hf_files):
            return "hf-cache"
    if hub.url:
        import torch.hub

        if (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(hub.url).path)).is_file():
            return "torch-hub-cache"
    return None


def hub_file(repo: str, filename: str, backbone: str, required: bool = True) -> Path | None:
    """One small file of a Hugging Face repo (a model's config), from the local cache or downloaded.

    Offline, a cached copy is used; otherwise the same one-line offline error as for weights. A file
    the repo does not have is None when not ``required``.
    """
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return Path(cached)
    reason = _reachable(constants.ENDPOINT)
    if reason is not None:
        if not required:
            return None
        raise _offline_error(backbone, f"hf-hub:{repo}", reason, filename)
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename))
    except EntryNotFoundError:
        if required:
            raise MedfmError(f"hf-hub:{repo} has no {filename}", f"check the name {backbone!r}") from None
        return None
    except GatedRepoError:
        raise MedfmError(f"hf-hub:{repo} is gated: your Hugging Face account needs access to it",
                         f"request access on https://huggingface.co/{repo}, then `huggingface-cli login` "
                         "(or set HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise MedfmError(f"there is no Hugging Face repo {repo!r} (or it is private)",
                         "check the name; for a private repo set HF_TOKEN") from None
    except Exception as exc:
        raise _offline_error(backbone, f"hf-hub:{repo}", f"{type(exc).__name__}: {exc}", filename) from None
