"""The graph a ``relaxtorch gibbs`` run samples: a builder spec or a DeepDive folder.

Three spellings, all checked before any sampling::

    graph = "ising:64x64,beta=0.4,h=0.1"         # a builder of relaxtorch.mcmc.factor.builders
    graph = "deepdive:path/to/folder"            # a DeepDive/Numbskull binary folder
    [graph]                                      # the same as a TOML table
    builder = "potts_all_pairs"
    n = 20
    D = 10

In the string form, ``NAME:ARG,ARG,...``: an ``AxB`` argument stands for two positional
integers (a grid's sides), a bare number for one positional argument, ``key=value`` for a
keyword (numbers, ``true``/``false``, else a string).  Arguments are checked against the
builder's signature, and whatever the builder refuses (``ValueError``) is a config error too.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

ALIASES = {"ising": "ising_grid", "potts": "potts_grid", "all_pairs": "potts_all_pairs"}
_GRID = re.compile(r"^(\d+)x(\d+)$")


class GraphSpecError(ValueError):
    """A graph spec the job cannot build (the message says which part and why)."""


def _builders() -> dict:
    """The public builders of ``relaxtorch.mcmc.factor.builders`` by name."""
    from ...mcmc.factor import builders
    names = getattr(builders, "__all__", None) or [n for n in dir(builders) if not n.startswith("_")]
    out = {}
    for name in names:
        fn = getattr(builders, name, None)
        if inspect.isfunction(fn) and fn.__module__ == builders.__name__ and \
                "FactorGraph" in str(inspect.signature(fn).return_annotation):  # builders, not helpers
            out[name] = fn
    return out


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec) -> dict:
    """A graph spec (string or table) as ``{"kind": "builder", "builder", "args", "kwargs"}`` or
    ``{"kind": "deepdive", "path"}``; GraphSpecError on a malformed one (no building yet)."""
    if isinstance(spec, dict):
        table = dict(spec)
        if "deepdive" in table:
            if set(table) != {"deepdive"}:
                raise GraphSpecError("a deepdive graph takes only the key 'deepdive' (its folder)")
            if not isinstance(table["deepdive"], str) or not table["deepdive"]:
                raise GraphSpecError("deepdive: must be a folder path (a string)")
            return {"kind": "deepdive", "path": table["deepdive"]}
        builder = table.pop("builder", None)
        if not isinstance(builder, str):
            raise GraphSpecError("a graph table needs builder = \"NAME\" (or deepdive = \"PATH\")")
        return {"kind": "builder", "builder": ALIASES.get(builder, builder), "args": [], "kwargs": table}
    if not isinstance(spec, str):
        raise GraphSpecError(f"must be a string like 'ising:64x64,beta=0.4' or a table, got {type(spec).__name__}")
    name, sep, rest = spec.partition(":")
    name = name.strip()
    if not sep or not name:
        raise GraphSpecError(f"{spec!r}: expected NAME:ARGS, e.g. 'ising:64x64,beta=0.4,h=0.1' or 'deepdive:PATH'")
    if name == "deepdive":
        if not rest.strip():
            raise GraphSpecError(f"{spec!r}: deepdive needs a folder, e.g. 'deepdive:graphs/ising'")
        return {"kind": "deepdive", "path": rest.strip()}
    args, kwargs = [], {}
    for part in (p.strip() for p in rest.split(",")):
        if not part:
            continue
        key, eq, val = part.partition("=")
        if eq:
            key = key.strip()
            if not key.isidentifier():
                raise GraphSpecError(f"{spec!r}: {key!r} is not an option name")
            if key in kwargs:
                raise GraphSpecError(f"{spec!r}: {key} given twice")
            kwargs[key] = _value(val.strip())
        elif _GRID.match(part):
            args += [int(g) for g in _GRID.match(part).groups()]
        else:
            if kwargs:
                raise GraphSpecError(f"{spec!r}: positional argument {part!r} after a keyword")
            args.append(_value(part))
    return {"kind": "builder", "builder": ALIASES.get(name, name), "args": args, "kwargs": kwargs}


def describe_spec(parsed: dict) -> str:
    """The parsed spec as one readable string (for the report and the table)."""
    if parsed["kind"] == "deepdive":
        return f"deepdive:{parsed['path']}"
    parts = ["x".join(str(a) for a in parsed["args"])] if parsed["args"] else []
    parts += [f"{k}={v}" for k, v in parsed["kwargs"].items()]
    return f"{parsed['builder']}:{','.join(parts)}"


def check_spec(parsed: dict, base: Path | None = None) -> dict:
    """Check the builder exists and takes these arguments (or the folder exists); returns ``parsed``
    with a resolved DeepDive path.  GraphSpecError otherwise; nothing is built."""
    if parsed["kind"] == "deepdive":
        path = Path(parsed["path"]).expanduser()
        if not path.is_absolute() and base is not None and not path.exists():
            path = base / path  # relative to the config file
        if not path.is_dir():
            raise GraphSpecError(f"deepdive:{parsed['path']}: no such folder")
        missing = [f for f in ("graph.meta", "graph.weights", "graph.variables", "graph.factors")
                   if not (path / f).is_file()]
        if missing:
            raise GraphSpecError(f"deepdive:{parsed['path']}: not a DeepDive graph folder (no {', '.join(missing)})")
        return {**parsed, "path": str(path)}
    builders = _builders()
    name = parsed["builder"]
    if name not in builders:
        raise GraphSpecError(f"unknown builder {name!r} (choose from {', '.join(sorted(builders))}; "
                             f"aliases {', '.join(f'{a}={b}' for a, b in ALIASES.items())})")
    sig = inspect.signature(builders[name])
    try:
        sig.bind(*parsed["args"], **parsed["kwargs"])
    except TypeError as exc:
        options = ", ".join(p for p in sig.parameters)
        raise GraphSpecError(f"{name}: {exc} (its options: {options})") from None
    return parsed


def build_graph(parsed: dict):
    """The ``FactorGraph`` of a checked spec; GraphSpecError when the builder or the reader refuses it
    (a malformed DeepDive file: the reader's message names the file, the array and the index)."""
    if parsed["kind"] == "deepdive":
        from ...mcmc.factor import deepdive
        try:
            return deepdive.read_deepdive(parsed["path"])
        except (ValueError, OSError) as exc:
            raise GraphSpecError(f"deepdive:{parsed['path']}: {exc}") from None
    fn = _builders()[parsed["builder"]]
    try:
        return fn(*parsed["args"], **parsed["kwargs"])
    except (ValueError, TypeError) as exc:
        raise GraphSpecError(f"{describe_spec(parsed)}: {exc}") from None
