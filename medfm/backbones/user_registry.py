"""A user's own backbones: entries of exactly the built-in zoo's shape, from a file or an installed package.

Where medfm looks (the first that is set wins; README 'Your own backbones'):
1. the ``--backbones-file`` option (config key ``backbones_file``);
2. the environment variable ``MEDFM_BACKBONES``;
3. ``$XDG_CONFIG_HOME/medfm/backbones.{yaml,yml,toml}`` (``~/.config/medfm/...``), if it exists.
Packages that ship models add entries through the Python entry-point group ``medfm.backbones``
(the entry point loads a ``BackboneEntry``, a mapping of its fields, a list of those, or a function
returning them).

A file holds ``backbones:`` as a list of mappings (or a mapping name -> fields); each mapping's keys
are ``BackboneEntry`` fields, plus ``weights`` (a local file, relative to the registry file, an
``https://`` URL, or ``hf-hub:<org>/<repo>``). For the timm, open_clip and hf loaders ``arch`` may
be left out: the rest is then read from the library as for an open name. A user name may not contain
':' (open names) and may not be a built-in name: either is a one-line error naming the file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from medfm.backbones.entry import BackboneEntry
from medfm.backbones.weights import HubSource, PackageFile
from medfm.errors import MedfmError

ENV = "MEDFM_BACKBONES"
ENTRY_POINT_GROUP = "medfm.backbones"
FILE_NAMES = ("backbones.yaml", "backbones.yml", "backbones.toml")
FIELDS = {f.name for f in dataclasses.fields(BackboneEntry)} - {"resolved", "weights_file"}
REQUIRED = ("name", "loader", "model_id")
# a user entry whose arch is left out takes the rest from the open-name scheme of its loader
SCHEME_OF_LOADER = {"timm": "timm", "open_clip": "open_clip", "hf": "hf"}


@dataclass(frozen=True)
class UserEntry:
    entry: BackboneEntry
    origin: str  # the file, or 'entry point <module:attr> (<distribution>)'


def default_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "medfm"


def registry_file(option: str | None = None) -> Path | None:
    """The user's backbones file: the option, else $MEDFM_BACKBONES, else the default location if present."""
    given = option or os.environ.get(ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            where = "--backbones-file" if option else f"${ENV}"
            raise MedfmError(f"backbones file {path} (from {where}) does not exist", f"check the path, or unset {where}")
        return path
    return next((p for p in (default_dir() / n for n in FILE_NAMES) if p.is_file()), None)


def user_backbones(option: str | None = None) -> dict[str, UserEntry]:
    """Every user entry (file and entry points), checked against the built-in names and each other."""
    path = registry_file(option)
    found = list(_entry_point_entries())
    if path is not None:
        found += _file_entries(str(path.resolve()), path.stat().st_mtime_ns)
    return _checked(found)


def _checked(found: list[UserEntry]) -> dict[str, UserEntry]:
    from medfm.backbones.zoo import BACKBONES

    out: dict[str, UserEntry] = {}
    for user in found:
        name = user.entry.name
        if name in BACKBONES:
            raise MedfmError(f"backbone {name!r} in {user.origin} clashes with the built-in backbone of that name",
                             f"rename it in {user.origin}")
        if name in out:
            raise MedfmError(f"backbone {name!r} is defined twice: in {out[name].origin} and in {user.origin}",
                             "rename one of them")
        out[name] = user
    return out


def read_registry_text(path: Path) -> list[dict]:
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise MedfmError(f"backbones file {path} is not valid {path.suffix[1:].upper()}: {first}", "fix its syntax") from None
    items = data.get("backbones") if isinstance(data, dict) else None
    if isinstance(items, dict):  # name -> fields
        items = [{"name": k, **(v or {})} for k, v in items.items()]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise MedfmError(f"backbones file {path} holds no 'backbones' list of entries",
                         "see README 'Your own backbones' for the format")
    return items


@lru_cache(maxsize=8)
def _file_entries(path: str, mtime_ns: int) -> tuple[UserEntry, ...]:
    file = Path(path)
    return tuple(UserEntry(make_entry(fields, str(file), file.parent), str(file)) for fields in read_registry_text(file))


@lru_cache(maxsize=1)
def _entry_point_entries() -> tuple[UserEntry, ...]:
    from importlib.metadata import entry_points

    out = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {ep.value} ({ep.dist.name if ep.dist else 'unknown package'})"
        try:
            obj = ep.load()
        except Exception as exc:
            raise MedfmError(f"{origin} cannot be loaded: {type(exc).__name__}: {exc}",
                             "fix or uninstall that package") from None
        obj = obj() if callable(obj) and not isinstance(obj, type) else obj
        for item in obj if isinstance(obj, (list, tuple)) else [obj]:
            entry = item if isinstance(item, BackboneEntry) else make_entry(item, origin, Path.cwd())
            out.append(UserEntry(entry, origin))
    return tuple(out)


def make_entry(fields: dict, origin: str, base: Path) -> BackboneEntry:
    """A ``BackboneEntry`` from a user's mapping, with one-line errors naming ``origin``."""
    from medfm.backbones.loaders import LOADERS

    fields = dict(fields)
    name = fields.get("name", "?")
    unknown = sorted(set(fields) - FIELDS - {"weights"})
    if unknown:
        raise MedfmError(f"backbone {name!r} in {origin} has unknown keys {', '.join(unknown)}",
                         f"use the keys of a built-in entry: {', '.join(sorted(FIELDS | {'weights'}))}")
    missing = [k for k in REQUIRED if not fields.get(k)]
    if missing:
        raise MedfmError(f"a backbone in {origin} lacks {', '.join(missing)}", "give name, loader and model_id")
    if ":" in str(name):
        raise MedfmError(f"backbone name {name!r} in {origin} contains ':', which marks open names (timm:...)",
                         "rename it without ':'")
    if fields["loader"] not in LOADERS:
        raise MedfmError(f"backbone {name!r} in {origin} has unknown loader {fields['loader']!r}",
                         f"use one of: {', '.join(LOADERS)}")
    weights = fields.pop("weights", None)
    if weights:
        w = str(weights)
        if w.startswith(("http://", "https://")):
            fields["hub"] = HubSource(url=w)
        elif w.startswith("hf-hub:"):
            fields["hub"] = HubSource(hf_repo=w.removeprefix("hf-hub:"))
        else:
            fields["weights_file"] = str((base / Path(w).expanduser()).resolve())
    if isinstance(fields.get("hub"), dict):
        hub = fields["hub"]
        fields["hub"] = HubSource(**{**hub, **({"hf_files": tuple(hub["hf_files"])} if "hf_files" in hub else {})})
    if fields.get("offline_copies"):
        fields["offline_copies"] = tuple(PackageFile(**c) for c in fields["offline_copies"])
    fields.setdefault("family", "user")
    try:
        if "arch" not in fields and fields["loader"] in SCHEME_OF_LOADER:
            return _from_open_name(fields)
        if "arch" not in fields:
            raise MedfmError(f"backbone {name!r} in {origin} lacks arch ('vit' or 'cnn')",
                             "give arch (only timm, open_clip and hf entries can leave it out)")
        return BackboneEntry(**fields)
    except TypeError as exc:
        raise MedfmError(f"backbone {name!r} in {origin} is not a valid entry: {exc}", "see README 'Your own backbones'") from None


def _from_open_name(fields: dict) -> BackboneEntry:
    """timm / open_clip / hf entries without arch: what the library says, overridden by the user's fields."""
    from medfm.backbones.names import OPEN_NAMES

    rest = fields["model_id"] + (f"/{fields['tag']}" if fields.get("tag") else "")
    base = OPEN_NAMES.get(SCHEME_OF_LOADER[fields["loader"]])(rest, fields["name"])
    return dataclasses.replace(base, **fields)
