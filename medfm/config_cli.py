"""Command-line options generated from the config models: each option is declared once, as a config field.

A field's type, default and ``description`` become the option's type, ``[default]`` and help; a new
config key is a new option without touching ``cli.py``. Per-option CLI details that the type cannot say
(a flag renamed, a list given as comma-separated text) live in the field's ``json_schema_extra["cli"]``.

Mapping, by the field's type:
- ``bool``: ``--name/--no-name`` (or the single flag named in ``cli.flag``);
- ``int``, ``float``, ``str`` (optional or not): that type;
- ``list[...]``: comma-separated text, split and parsed by the config model;
- ``dict``: a repeatable ``KEY=VALUE`` option;
- anything else (``Literal``, unions such as ``int | 'auto'``): text, parsed and checked by the model, so a
  bad value gives the model's one-line error naming the key.

Every option defaults to None, meaning "not given": the config file's value (or the model's default) stands.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Annotated, Any, Callable, Literal, Optional, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.markup import escape

from medfm.errors import MedfmError

_NONE_WORDS = ("none", "null")


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``; other annotations unchanged."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    if get_origin(annotation) is Annotated:
        return _strip_optional(get_args(annotation)[0])
    return annotation


def _shape(annotation: Any) -> str:
    """How an annotation is given on the command line: bool, int, float, str, list, dict or text."""
    inner = _strip_optional(annotation)
    origin = get_origin(inner)
    if inner in (bool, int, float, str):
        return inner.__name__
    if origin is list:
        return "list"
    if origin is dict or inner is dict:
        return "dict"
    return "text"


def _choices(annotation: Any) -> list[str]:
    """The allowed words of a Literal (also inside a union or a list)."""
    inner = _strip_optional(annotation)
    if get_origin(inner) is Literal:
        return [str(v) for v in get_args(inner)]
    return [word for arg in get_args(inner) for word in _choices(arg)]


def _cli_extra(field: FieldInfo) -> dict:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return dict(extra.get("cli", {}))


def _help(field: FieldInfo, shape: str) -> str:
    parts = [field.description or ""]
    choices = _choices(field.annotation)
    if choices and not all(c in parts[0] for c in choices):
        parts.append(f"(one of: {', '.join(choices)})")
    if shape == "list":
        parts.append("(comma-separated)")
    if shape == "dict":
        parts.append("(KEY=VALUE, repeatable)")
    if not field.is_required():
        default = field.get_default(call_default_factory=True)
        if default not in (None, [], {}) and "[" not in parts[0]:
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            parts.append(f"[{str(shown).lower() if isinstance(shown, bool) else shown}]")
    return escape(" ".join(p for p in parts if p))  # '[default]' is text, not rich markup


def _parameter(name: str, field: FieldInfo) -> inspect.Parameter:
    """The typer parameter for one config field."""
    shape = _shape(field.annotation)
    extra = _cli_extra(field)
    option_name = "--" + extra.get("name", name).replace("_", "-")
    help_text = _help(field, shape)
    if shape == "bool":
        decls = [extra["flag"]] if "flag" in extra else [f"{option_name}/--no-{option_name[2:]}"]
        annotation = Annotated[Optional[bool], typer.Option(*decls, help=help_text, show_default=False)]
    elif shape in ("int", "float", "str"):
        py = {"int": int, "float": float, "str": str}[shape]
        annotation = Annotated[Optional[py], typer.Option(option_name, help=help_text, show_default=False)]
    elif shape == "dict":
        annotation = Annotated[Optional[list[str]], typer.Option(option_name, help=help_text, show_default=False)]
    else:  # list and text: parsed from text
        annotation = Annotated[Optional[str], typer.Option(option_name, help=help_text, show_default=False)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def _parse_pairs(option: str, items: list[str]) -> dict:
    pairs = {}
    for item in items:
        if "=" not in item:
            raise MedfmError(f"--{option.replace('_', '-')} {item!r} is not KEY=VALUE",
                             f"e.g. --{option.replace('_', '-')} name=value (repeat the option for more)")
        key, value = item.split("=", 1)
        value = value.strip()
        pairs[key.strip()] = None if value.lower() in _NONE_WORDS else value  # the config model parses the value
    return pairs


def _to_setting(name: str, field: FieldInfo, value: Any) -> Any:
    """A parsed command-line value -> the config value (KEY=VALUE pairs gathered; the model splits lists)."""
    shape = _shape(field.annotation)
    if value is None:
        return None
    if shape == "dict":
        return _parse_pairs(name, value)
    return value


def _options(config: type[BaseModel], borrow: dict) -> dict[str, tuple[str | None, FieldInfo]]:
    """Option name -> (the dict key it is gathered into, or None; its field), in --help order."""
    options = {key: (None, field) for key, field in config.model_fields.items()}
    for into, (other, keys) in borrow.items():
        for key in keys:
            if key in options:
                raise ValueError(f"{config.__name__}.{key} already exists; cannot borrow it into {into}")
            options[key] = (into, other.model_fields[key])
    return options


def settings_from_options(config: type[BaseModel], values: dict, borrow: dict | None = None) -> dict:
    """Parsed option values (None = not given) -> the settings dict that ``config.load`` takes."""
    settings: dict = {}
    for key, (into, field) in _options(config, borrow or {}).items():
        value = _to_setting(key, field, values.get(key))
        if into is None:
            settings[key] = value
        elif value is not None:
            settings[into] = {**(settings.get(into) or {}), key: value}
    return settings


def config_command(app: typer.Typer, config: type[BaseModel], *, name: str | None = None,
                   extra: dict[str, tuple[Any, Any]] | None = None,
                   borrow: dict[str, tuple[type[BaseModel], tuple[str, ...]]] | None = None) -> Callable:
    """Register ``body(settings: dict, **extra)`` as a command whose options are ``config``'s fields.

    ``extra``: CLI-only parameters that are not config keys (``--config``, ``--json``), as
    ``name -> (annotation, default)``. ``borrow``: options declared on another config model and gathered
    into one dict-valued key of this one (``medfm sweep --epochs 5`` sets ``probe.epochs``), so even those
    keep one declaration.
    """
    extra = extra or {}
    borrow = borrow or {}

    def register(body: Callable) -> Callable:
        params = [_parameter(key, field) for key, (_, field) in _options(config, borrow).items()]
        params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
                   for k, (a, d) in extra.items()]

        def command(**kwargs):
            extras = {k: kwargs.pop(k) for k in extra}
            return body(settings_from_options(config, kwargs, borrow), **extras)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__doc__ = body.__doc__
        command.__name__ = body.__name__
        app.command(name or body.__name__.replace("_", "-"))(command)
        return body

    return register
