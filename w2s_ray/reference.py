"""The reference `--help` prints: every config field with its type, default and description (read
from the pydantic models, so it cannot drift from what the loader accepts), the methods and the
capabilities (read from their registries)."""

from __future__ import annotations

import textwrap
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from w2s_ray.config import SweepConfig

WIDTH = 100
NAME_WIDTH = 34


def type_name(annotation: Any) -> str:
    """A field's type as a user writes it in YAML: `int`, `auto | vllm`, `list[str]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


def sub_model(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The model a field holds (itself, or the item of a list / value of a dict) and the suffix
    its fields take in a dotted name."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0], "[]"
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return args[1], ".<capability>"
    return None


def field_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, `type = default`, description) of every field, nested sections expanded."""
    rows = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        default = default_text(field)
        kind = type_name(field.annotation)
        rows.append((dotted, f"{kind}{' = ' + default if default else ''}", field.description or ""))
        inner = sub_model(field.annotation)
        if inner is not None:
            rows += field_rows(inner[0], f"{dotted}{inner[1]}.")
    return rows


def config_fields() -> list[str]:
    """Every dotted field name `--set` accepts (list items as `[]`)."""
    return [name for name, _, _ in field_rows(SweepConfig)]


def wrap(head: str, text: str) -> list[str]:
    indent = " " * (NAME_WIDTH + 2)
    first = f"  {head:<{NAME_WIDTH}}"
    if len(head) > NAME_WIDTH:
        return [f"  {head}", *textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent)]
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=indent) or [first]


def fields_section() -> list[str]:
    lines = ["config fields (set in a preset, or --set FIELD=VALUE with a YAML value):"]
    for name, kind, description in field_rows(SweepConfig):
        lines += wrap(name, f"{kind}. {description}" if description else kind)
    return lines


def methods_section() -> list[str]:
    from w2s_ray import methods
    from w2s_ray.methods.registry import FAMILIES

    recipes = {**methods.METHODS, **{name: fn for name, (fn, _) in FAMILIES.items()}}
    modules = [m.__name__ for m in (methods.baselines, methods.burns, methods.ours, methods.ablations,
                                    methods.w2sr)]
    lines = ["methods (--methods; weak and ceiling are always needed):"]
    # baselines (Burns et al.'s variants with them), then the paper's method, then its ablations: the
    # order docs/design.md explains them
    for name in sorted(methods.allowed(),
                       key=lambda n: modules.index(recipes[n.split("-<")[0]].__module__)):
        doc = (recipes[name.split("-<")[0]].__doc__ or "").strip().splitlines()
        lines += wrap(name, doc[0] if doc else "")
    return lines


def capabilities_section() -> list[str]:
    from w2s_ray.capabilities import registry
    from w2s_ray.capabilities.hub.base import HubCapability

    names = registry.names()
    loaded = [n for n in names if isinstance(registry.get(n), HubCapability)]
    synthetic = [n for n in names if n not in loaded]
    return ["capabilities (capabilities: [...]):",
            *wrap("synthetic (tiny ladder)", ", ".join(synthetic)),
            *wrap("published datasets", ", ".join(loaded) + " (from the hub, or a --data-dir mirror)")]


def reference() -> str:
    return "\n".join([*fields_section(), "", *methods_section(), "", *capabilities_section()])
