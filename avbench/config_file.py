"""Run configuration files: ``avbench run --config run.yaml`` (and ``sweep``), and the fully resolved
config every run writes beside its results, so ``avbench run --config <that file>`` reproduces it.

Why a file: a command line with twenty ``--set`` flags cannot be cited, diffed or re-run reliably.

The file holds any of the command's own fields (its long option names, ``-`` or ``_``) plus the
sections ``model:``, ``train:`` and ``data:`` (the strategy config, the recipe and the dataset knobs;
``set:`` for keys routed as a bare ``--set`` would be). Merging is argparse's own: the file's values
become the parser's defaults, so every flag given on the command line wins, and the file's sections
become ``--set`` pairs placed *before* the command line's, so ``--set`` wins too. Field values are
typed by ``avbench.config`` (the one place ``--set`` is coerced), exactly as on the command line.
YAML is read and written with PyYAML's safe loader/dumper.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import sys
from pathlib import Path
from typing import Any, Mapping

from avbench.errors import UserError

SECTIONS = ("model", "train", "data")
MAX_CONFIG_BYTES = 1 << 20
HEADER = ("# avbench {command} configuration, fully resolved by avbench {version}.\n"
          "# Reproduce: avbench {command} --config THIS_FILE  (flags and --set given after it override it)\n")


# --- reading ------------------------------------------------------------------------------------
def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="YAML file of this command's fields and model:/train:/data: sections; "
                             "flags and --set given on the command line override it")


def load(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--config {path}: no such file")
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:  # a run configuration is a few KiB; this is some other file
        raise UserError(f"--config {path}: {size} bytes, not a configuration file (at most {MAX_CONFIG_BYTES})")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"--config {path}: not a text file (byte {e.start} is not UTF-8)") from None
    except OSError as e:
        raise UserError(f"--config {path}: cannot read ({(e.strerror or type(e).__name__).lower()})") from None
    if "\x00" in text:
        raise UserError(f"--config {path}: not a text file (it holds NUL bytes)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:  # deeply nested flow collections
        raise UserError(f"--config {path}: nested too deeply to be a configuration") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of fields at the top level")
    return data


def _config_path(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config":
            if i + 1 >= len(argv):
                return None  # argparse reports the missing value
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def _subparser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for a in argv:
                if a in action.choices:
                    return action.choices[a]
    return None


def _set_value(v: Any) -> str:
    """A YAML value as the string ``--set`` would carry (``avbench.config`` types it)."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_set_value(x) for x in v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    if isinstance(v, Mapping):
        raise UserError(f"--config: nested mapping {dict(v)} is not a settable value")
    return str(v)


def to_set_pairs(data: Mapping[str, Any], path: str) -> list[str]:
    """The file's ``model:``/``train:``/``data:``/``set:`` sections as ``--set`` items."""
    out = []
    for section in (*SECTIONS, "set"):
        body = data.get(section)
        if body is None:
            continue
        if section == "set" and isinstance(body, list):
            out += [str(x) for x in body]
            continue
        if not isinstance(body, Mapping):
            raise UserError(f"--config {path}: '{section}' must be a mapping of field: value")
        prefix = "" if section == "set" else f"{section}."
        out += [f"{prefix}{k}={_set_value(v)}" for k, v in body.items()]
    return out


def apply_file(sub: argparse.ArgumentParser, data: Mapping[str, Any], path: str) -> None:
    """Make the file's values the defaults of the subcommand parser ``sub``."""
    actions = {a.dest: a for a in sub._actions if a.dest not in ("help", "config")}
    aliases = {"set": "overrides"}
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        if key in (*SECTIONS, "set"):
            continue
        dest = aliases.get(str(key).replace("-", "_"), str(key).replace("-", "_"))
        if dest not in actions:
            known = sorted({a.option_strings[-1].lstrip("-") for a in actions.values() if a.option_strings}
                           | {*SECTIONS, "set"})
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"
            raise UserError(f"--config {path}: unknown field '{key}' for avbench {sub.prog.split()[-1]}{hint}")
        if value is None:
            continue
        action = actions[dest]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise UserError(f"--config {path}: '{key}' must be true or false, got {value!r}")
        elif isinstance(value, Mapping):
            raise UserError(f"--config {path}: '{key}' must be a single value, not a mapping")
        elif isinstance(action, argparse._AppendAction):  # a repeatable flag (sweep --grid): a list
            value = [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        else:  # as the command line would give it; argparse types string defaults (--epochs: int)
            value = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        if action.choices is not None and value not in action.choices:
            raise UserError(f"--config {path}: '{key}' must be one of {', '.join(map(str, action.choices))}, "
                            f"got {value!r}")
        defaults[dest] = value
        action.required = False
    for group in sub._mutually_exclusive_groups:
        if any(a.dest in defaults for a in group._group_actions):
            group.required = False
    sets = to_set_pairs(data, path)
    if sets:
        defaults["overrides"] = sets
    sub.set_defaults(**defaults)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` with ``--config FILE`` merged under the command line (see module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path = _config_path(argv)
    sub = _subparser(parser, argv) if path else None
    if path is None or sub is None or not any(a.dest == "config" for a in sub._actions):
        return parser.parse_args(argv)
    data = load(path)
    apply_file(sub, data, path)
    args = parser.parse_args(argv)
    given = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    for group in sub._mutually_exclusive_groups:  # the command line's choice replaces the file's
        members = group._group_actions
        if any(set(m.option_strings) & given for m in members):
            for m in members:
                if not set(m.option_strings) & given:
                    setattr(args, m.dest, None)
    return args


# --- writing ------------------------------------------------------------------------------------
def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return x


def resolved_run_config(req: Any, r: Any) -> dict[str, Any]:
    """Everything that decides a run's numbers, from a ``RunRequest`` and its ``Resolved``: reading it
    back with ``--config`` gives the same strategy config, recipe, data knobs and cache."""
    out: dict[str, Any] = {"strategy": req.strategy}
    if req.dataset is not None:
        out["dataset"] = req.dataset
    else:
        out["cache"] = str(Path(r.cache.root).resolve())
    out.update({"seeds": list(req.seeds), "protocol": req.protocol, "device": req.device})
    if req.train_modality:
        out["train_modality"] = req.train_modality
    if getattr(req, "init_from", None):  # the starting weights decide the numbers too
        out["init_from"] = str(Path(req.init_from).expanduser().resolve())
    out["model"] = _plain(dataclasses.asdict(r.strategy_cfg))
    out["train"] = _plain(dataclasses.asdict(r.recipe))
    if req.dataset is not None and r.knobs is not None:
        out["data"] = _plain(dataclasses.asdict(r.knobs))
    return out


def dump_yaml(data: Mapping[str, Any], command: str = "run") -> str:
    import yaml

    import avbench

    return HEADER.format(command=command, version=avbench.__version__) + yaml.safe_dump(
        _plain(data), sort_keys=False, default_flow_style=False)


def write_yaml(path: str | Path, data: Mapping[str, Any], command: str = "run") -> Path:
    from avbench import fsguard

    p = Path(path)
    if str(path) == fsguard.STDOUT:  # the JSON went to standard output: no config file beside it
        return p
    p.parent.mkdir(parents=True, exist_ok=True)
    with fsguard.atomic_write(p) as tmp:  # a regular file or a new name; no .tmp outlives a failure
        tmp.write_text(dump_yaml(data, command))
    return p


def beside(path: str | Path) -> Path:
    """``out/uavm.json`` -> ``out/uavm.config.yaml`` (``-``, standard output, has none: ``-``)."""
    if str(path) == "-":
        return Path("-")
    p = Path(path)
    return p.with_name(p.stem + ".config.yaml")


def log_to_run(tracker: Any, run_id: str, data: Mapping[str, Any]) -> None:
    """The resolved config as ``config.yaml`` in an MLflow run, beside its ``result.json``."""
    tracker.client.log_text(run_id, dump_yaml(data), "config.yaml")
