"""From a backbone name as typed to its registry entry: the one lookup every stage uses.

A name is, in this order:
- a built-in zoo name (``dinov2_vits14``);
- a user's own entry (``user_registry.py``: a YAML/TOML file or a ``medfm.backbones`` entry point);
- an **open name** ``<scheme>:<rest>`` — ``timm:<model>[.<tag>]``, ``open_clip:<model>/<tag>``,
  ``open_clip:hf-hub:<org>/<repo>``, ``hf:<org>/<repo>`` — for which a scheme of ``OPEN_NAMES``
  makes a registry entry on the fly (``open_names.py``), so the pipeline never branches on names:
  an open name is an entry like any other, built by its library's loader.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from medfm.backbones.entry import BackboneEntry
from medfm.backbones.zoo import BACKBONES
from medfm.errors import MedfmError, close_matches
from medfm.registry import Registry

# scheme -> function(rest of the name, name as typed) -> BackboneEntry
OPEN_NAMES: Registry[Callable[[str, str], BackboneEntry]] = Registry("open backbone name scheme",
                                                                    "README 'Any model by name'")
OPEN_NAME_FORMS = "timm:<model>[.<tag>], open_clip:<model>/<tag>, open_clip:hf-hub:<org>/<repo>, hf:<org>/<repo>"


def find_backbone(name: str, backbones_file: str | None = None) -> BackboneEntry:
    """The registry entry of ``name``: built-in, the user's own, or made from an open name.

    The user's registry is read first (cached per file version), so a user entry that clashes with a
    built-in name is an error even when the built-in name is the one asked for."""
    from medfm.backbones.user_registry import user_backbones

    users = user_backbones(backbones_file)
    if name in BACKBONES:
        return BACKBONES.get(name)
    if name in users:
        return users[name].entry
    scheme, sep, rest = name.partition(":")
    if sep and scheme in OPEN_NAMES:
        if not rest:
            raise MedfmError(f"backbone name {name!r} names no model after '{scheme}:'", f"use one of {OPEN_NAME_FORMS}")
        return _open_entry(scheme, rest, name)
    choices = [*BACKBONES.names(), *users]
    sugg = close_matches(name, choices)
    did_you_mean = f"did you mean {', '.join(repr(s) for s in sugg)}? " if sugg else ""
    bad_scheme = f" ({scheme!r} is not a scheme)" if sep else ""
    raise MedfmError(f"unknown backbone {name!r}{bad_scheme}",
                     f"{did_you_mean}`medfm backbones` lists all {len(choices)}; any library model: {OPEN_NAME_FORMS}")


@lru_cache(maxsize=64)
def _open_entry(scheme: str, rest: str, name: str) -> BackboneEntry:
    return OPEN_NAMES.get(scheme)(rest, name)


def is_backbone(name: str, backbones_file: str | None = None) -> bool:
    """Whether ``name`` resolves to an entry (open names are checked against their library)."""
    try:
        find_backbone(name, backbones_file)
        return True
    except MedfmError:
        return False


def folder_name(name: str) -> str:
    """A backbone name as one path component: ``hf:facebook/dinov2-small`` -> ``hf-facebook-dinov2-small``."""
    return re.sub(r"[^\w.+-]+", "-", name).strip("-")
