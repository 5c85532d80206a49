"""The backbone table, generated from the registry (the CLI and README both print this)."""

from __future__ import annotations

from medfm.backbones.zoo import BACKBONES

HEADER = ("name", "family", "loader", "model id", "default feature", "default px", "params (M)", "weights licence")


def backbone_rows() -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    rows = []
    for name, e in BACKBONES.items():
        px = str(e.img_size) if e.img_size else "native"
        rows.append((name, e.family, e.loader, e.model_id, e.feature, px, f"{e.params_m:g}", e.licence))
    return HEADER, rows


def markdown_table() -> str:
    header, rows = backbone_rows()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"`{c}`" if i in (0, 3) else c for i, c in enumerate(r)) + " |" for r in rows]
    return "\n".join(lines)
