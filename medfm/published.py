"""Published numbers beside medfm's: a CSV of literature values, read strictly, matched to report entries.

The file (``medfm report --published FILE``; presets ship theirs under ``medfm/published/``) has the
columns ``dataset, backbone, protocol, image_size, metric, value, source, note`` and, optionally,
``settings`` (``key=value;key=value``: the published protocol's settings that medfm can compare, e.g.
``k=11`` or ``optimizer=adamw;epochs=100``).

- ``value`` is on medfm's 0-1 scale, or a percentage written with ``%`` (``97.29%``); a bare number
  above 1 is refused, since a silently rescaled (or not rescaled) number is worse than an error.
- ``protocol`` names a row of ``PROTOCOLS`` (what kind of medfm run it corresponds to);
  ``metric`` a medfm metric (``medfm metrics``) or a common alias (``AUC``, ``ACC``).
- ``image_size`` is the dataset's image size in pixels (MedMNIST+ 28/64/128/224) or empty.

A published row matches a medfm entry when dataset, backbone, protocol, image size and metric agree.
Where the published settings differ from what medfm ran (head, optimiser, epochs, k), the comparison says
so instead of pretending the numbers are like for like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medfm.data.tables import open_csv
from medfm.errors import MedfmError
from medfm.metrics import METRICS
from medfm.registry import Registry

COLUMNS = ("dataset", "backbone", "protocol", "image_size", "metric", "value", "source", "note")
SHIPPED = Path(__file__).parent / "published"  # the published tables presets ship


@dataclass(frozen=True)
class Protocol:
    """A published protocol as a medfm run: the run kind, its head, and its depth of fine-tuning."""

    kind: str  # probe | finetune
    head: str
    unfreeze: str | None = None  # finetune: "all" for end-to-end
    description: str = ""


PROTOCOLS: Registry[Protocol] = Registry("published protocol", "medfm report --help")
PROTOCOLS.add("linear probe", Protocol("probe", "linear", description="frozen backbone, linear head on pooled features"))
PROTOCOLS.add("logreg", Protocol("probe", "logreg", description="frozen backbone, logistic regression"))
PROTOCOLS.add("knn", Protocol("probe", "knn", description="frozen backbone, k-nearest neighbours"))
PROTOCOLS.add("deit head", Protocol("probe", "deit", description="frozen backbone, DeiT attention head on tokens"))
PROTOCOLS.add("end-to-end", Protocol("finetune", "linear", "all", "every block and a linear head trained"))

METRIC_ALIASES = {"auc": "roc_auc", "roc-auc": "roc_auc", "acc": "accuracy", "qwk": "quadratic_kappa",
                  "kappa": "cohen_kappa", "bacc": "balanced_accuracy", "f1": "f1_macro"}


@dataclass(frozen=True)
class PublishedRow:
    dataset: str
    backbone: str
    protocol: str
    image_size: int | None
    metric: str
    value: float  # 0-1 scale
    source: str
    note: str
    settings: dict = field(default_factory=dict)
    where: str = ""  # file:line, for messages

    def key(self) -> tuple:
        return (self.dataset, self.backbone, self.protocol, self.image_size, self.metric)


def _value(text: str, where: str) -> float:
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        number = float(raw.rstrip("%").strip())
    except ValueError:
        raise MedfmError(f"{where}: value {raw!r} is not a number", "write e.g. 0.973 or 97.3%") from None
    if percent:
        number /= 100
    elif number > 1:
        raise MedfmError(f"{where}: value {raw} is above 1 without a % sign",
                         f"write {raw}% if it is a percentage, or {number / 100:g} on medfm's 0-1 scale")
    if not 0 <= number <= 1:
        raise MedfmError(f"{where}: value {raw} is outside 0-1 (0-100%)", "check the number")
    return number


def _settings(text: str, where: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        if "=" not in part:
            raise MedfmError(f"{where}: setting {part!r} is not key=value", "write settings as k=11;epochs=100")
        key, value = part.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _metric(text: str, where: str) -> str:
    name = METRIC_ALIASES.get(text.strip().lower(), text.strip())
    if name not in METRICS:
        raise MedfmError(f"{where}: unknown metric {text!r}",
                         f"use a medfm metric ({', '.join(METRICS.names())}) or {', '.join(METRIC_ALIASES)}")
    return name


def read_published(path: str | Path) -> list[PublishedRow]:
    """Every row of a published-numbers CSV, checked; a bad row stops with its file and line."""
    path = Path(path)
    rows: list[PublishedRow] = []
    seen: dict[tuple, str] = {}
    with open_csv(path, f"published-numbers file {path} not found", "check --published") as table:
        table.require(COLUMNS, f"a published-numbers CSV has the columns {', '.join(COLUMNS)} (+ optional settings)")
        for line, rec in table.records():
            get = {c: (rec.get(table.columns[c]) or "").strip() for c in (*COLUMNS, "settings") if table.has(c)}
            where = f"{path}:{line}"
            protocol = get["protocol"].lower()
            if protocol not in PROTOCOLS:
                raise MedfmError(f"{where}: unknown protocol {get['protocol']!r}", f"use one of {', '.join(PROTOCOLS.names())}")
            size = get["image_size"]
            if size and not size.isdigit():
                raise MedfmError(f"{where}: image_size {size!r} is not a whole number of pixels", "e.g. 28 or 224, or leave it empty")
            row = PublishedRow(get["dataset"], get["backbone"], protocol, int(size) if size else None,
                               _metric(get["metric"], where), _value(get["value"], where), get["source"], get["note"],
                               _settings(get.get("settings", ""), where), where)
            if not row.dataset or not row.backbone:
                raise MedfmError(f"{where}: dataset and backbone must not be empty", "fill them in")
            if row.key() in seen:
                raise MedfmError(f"{where}: the same dataset/backbone/protocol/size/metric as {seen[row.key()]}",
                                 "keep one value per published entry (put variants in different protocols or notes)")
            seen[row.key()] = where
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Comparison:
    entry: dict  # the medfm entry (dataset, backbone, protocol, image_size, metric, value, settings)
    published: PublishedRow
    difference: float  # medfm - published, 0-1 scale
    protocol_differences: tuple[str, ...]  # empty: like for like as far as both record


def _protocol_differences(entry_settings: dict, published: dict) -> tuple[str, ...]:
    out = []
    for key, value in published.items():
        if key not in entry_settings:
            out.append(f"published {key}={value}; medfm's run does not use {key}")
        elif str(entry_settings[key]) != value:
            out.append(f"published {key}={value}; medfm ran {key}={entry_settings[key]}")
    return tuple(out)


def compare(entries: list[dict], published: list[PublishedRow]) -> tuple[list[Comparison], list[PublishedRow]]:
    """Published rows matched to medfm entries, and the published rows no entry matches.

    An entry is a dict with ``dataset, backbone, protocol, image_size, metric, value`` and ``settings``
    (the settings of the run that are comparable with published ones, e.g. ``{"k": "10,20,50"}``). Several
    entries may match one published row (e.g. two medfm runs of one backbone at different input sizes):
    each gets its comparison, none is dropped.
    """
    by_key: dict[tuple, list[dict]] = {}
    for e in entries:
        by_key.setdefault((e["dataset"], e["backbone"], e["protocol"], e.get("image_size"), e["metric"]), []).append(e)
    matched, unmatched = [], []
    for row in published:
        found = by_key.get(row.key(), [])
        if not found:
            unmatched.append(row)
        matched += [Comparison(entry, row, float(entry["value"]) - row.value,
                               _protocol_differences(entry.get("settings", {}), row.settings)) for entry in found]
    return matched, unmatched


def resolve_published(text: str) -> Path:
    """``--published``: a CSV file, or the name of a table medfm ships (``medmnist_plus``)."""
    path = Path(text)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{text}.csv"
    if shipped.is_file() and path.parent == Path("."):
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.csv")))
    raise MedfmError(f"published-numbers file {text} not found", f"give a CSV file or a shipped table: {names}")
