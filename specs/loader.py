"""Load specs from YAML/JSON files or dicts; every failure becomes one `SpecError` that names
the file, the field path and the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import SpecError

M = TypeVar("M", bound=BaseModel)


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif str(item).startswith(("function-", "tagged-union", "int", "tuple", "list")) and parts:
            continue  # pydantic's union-branch markers
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def spec_error_from_validation(
    err: ValidationError, prefix: str = "", source: str | None = None
) -> SpecError:
    """The first validation error, as a `SpecError` with a dotted field path."""
    first = err.errors()[0]
    path = _loc_to_path(tuple(first.get("loc", ())))
    field = ".".join(p for p in (prefix, path) if p) or None
    reason = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        reason = "unknown field (check its spelling)"
    elif first.get("type") == "missing":
        reason = "required field is missing"
    given = first.get("input")
    if first.get("type") not in ("missing", "extra_forbidden") and isinstance(
        given, (int, float, str)
    ):
        reason = f"{reason} (got {given!r})"
    return SpecError(reason, field=field, source=source)


def validate(model: type[M], data: Any, prefix: str = "", source: str | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise spec_error_from_validation(err, prefix, source) from None


def read_document(path: str | Path) -> Any:
    """Parse a YAML or JSON file, with file-named errors."""
    p = Path(path)
    if not p.exists():
        raise SpecError("file not found", source=str(p))
    if p.is_dir():
        raise SpecError("is a directory, expected a YAML or JSON file", source=str(p))
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark from an editor is fine
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read: {err}", source=str(p)) from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_unique_pairs)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except SpecError as err:  # a duplicate JSON key
        raise err.with_source(str(p)) from None
    except json.JSONDecodeError as err:
        raise SpecError(
            f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}", source=str(p)
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"malformed YAML{where}: {problem}", source=str(p)) from None
    if not isinstance(data, dict):
        raise SpecError("expected a mapping of fields at the top level", source=str(p))
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last).
    Merge keys (`<<: *anchor`) are flattened first, as SafeLoader does; keys a merge brings in
    may be overridden, as YAML allows."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            own = sum(k.tag != "tag:yaml.org,2002:merge" for k, _ in node.value)
            self.flatten_mapping(node)  # merged pairs come first, then the node's own
            merged = len(node.value) - own
            seen: set = set()
            for i, (key_node, _) in enumerate(node.value):
                if i < merged:
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, "a key must be a plain value", key_node.start_mark
                    ) from None
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SpecError(f"key {key!r} is given twice")
        out[key] = value
    return out


def load_spec(model: type[M], path: str | Path) -> M:
    return validate(model, read_document(path), source=str(path))


def read_profiles(path: str | Path) -> dict[str, Any]:
    """The efficiency profiles in a file, by name. Accepted: what `scaleplan calibrate --out`
    writes and `specs/catalog/profiles.yaml` holds ({name: profile, ...}), one bare profile, or
    an object with a `profile` key (`scaleplan calibrate --json`)."""
    from .efficiency import EfficiencyProfile

    data = read_document(path)
    if isinstance(data, dict) and isinstance(data.get("profile"), dict):
        data = data["profile"]
    if not isinstance(data, dict) or not data:
        raise SpecError(
            "expected an efficiency profile, or a mapping of named ones", source=str(path)
        )
    fields = set(EfficiencyProfile.model_fields)
    if set(data) & fields:  # one bare profile
        prof = validate(EfficiencyProfile, data, source=str(path))
        return {prof.name: prof}
    out = {}
    for name, values in data.items():
        if not isinstance(values, dict):
            raise SpecError(
                "expected a profile (a mapping of its fields)", field=str(name), source=str(path)
            )
        out[str(name)] = validate(
            EfficiencyProfile, {**values, "name": str(name)}, str(name), str(path)
        )
    return out


def profile_for_gpu(profiles: dict[str, Any], gpu_name: str, path: str | Path) -> Any:
    """The one profile of a file that applies to a catalog GPU: the file's only profile, else the
    one that lists the GPU (default stack first), else the one named like its shipped profile."""
    from .efficiency import profile_name_for

    if len(profiles) == 1:
        return next(iter(profiles.values()))
    listing = [p for p in profiles.values() if gpu_name in p.gpus]
    listing.sort(key=lambda p: p.stack != "default")
    if listing:
        return listing[0]
    named = profiles.get(profile_name_for(gpu_name))
    if named is not None:
        return named
    raise SpecError(
        f"no profile for {gpu_name} among {', '.join(sorted(profiles))}", source=str(path)
    )
