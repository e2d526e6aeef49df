"""What every command shares: naming a configuration, loading the model, threads and errors.

One way to name a ``LookaheadConfig`` in every entry point (generate, bench, sweep,
sampling_report)::

    --import my_pools.py            register strategies from a file or a module (repeatable)
    --config cpu.yaml               a LookaheadConfig mapping (bench: repeatable, or a list)
    --window 4 --ngram 4 --guess-set 4       sugar for the three sizes
    --set pool.name=lfu --set pool.capacity=8 --set realign=shift   any field, dotted (repeatable)

Later ones win: the file, then the sugar flags, then ``--set``. Values are YAML (``8``, ``null``,
``true``, ``lfu``). A strategy block that names no strategy keeps the default one, so
``--set pool.capacity=8`` tunes the default pool. Every value is validated by ``LookaheadConfig``
before any model loads, and an error names the flag that set the value::

    --set pool.capacity=0: Input should be greater than or equal to 1 (got 0)

Output rule for every command: progress (bars, per-item lines, headers) goes to stderr, results
(tables, stats lines, reproduction commands) to stdout. Exit status: 0 done, 1 the model or the
run failed, 2 a bad flag or file (the message names it).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from framework.config import LookaheadConfig


class CliError(ValueError):
    """A flag or file that cannot be used (status 2), or a model that cannot be loaded (status 1);
    the message starts with the flag."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def fail(error: object, status: int) -> int:
    """Print ``error: ...`` to stderr and return the exit status."""
    print(f"error: {error}", file=sys.stderr)
    return status


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None, body: Callable[[argparse.Namespace], int]) -> int:
    """Parse ``argv`` (argparse names a bad flag itself) and return ``body(args)``'s exit status;
    a ``CliError`` becomes one ``error: ...`` line on stderr and its status, never a traceback."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    args.argv = argv
    try:
        return body(args)
    except CliError as error:
        return fail(error, error.status)


def int_at_least(low: int):
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


# --------------------------------------------------------------------------------------------
# Strategies from outside the repo


def import_strategies(specs: Iterable[str], flag: str = "--import") -> list[str]:
    """Import each module name (``my_pkg.pools``) or file path (``./my_pool.py``) so that its
    ``@register`` decorators run. Returns the specs; errors name the flag."""
    done = []
    for spec in specs:
        path = Path(spec)
        try:
            if spec.endswith(".py") or path.is_file():
                _import_file(path)
            else:
                if os.getcwd() not in sys.path:  # `python -m` has it; a console script may not
                    sys.path.insert(0, os.getcwd())
                importlib.import_module(spec)
        except (ImportError, OSError, SyntaxError) as error:
            raise CliError(f"{flag} {spec}: cannot import it ({type(error).__name__}: {error})") from None
        except ValueError as error:  # e.g. a name already registered by another class
            raise CliError(f"{flag} {spec}: {error}") from None
        done.append(spec)
    return done


def _import_file(path: Path) -> None:
    resolved = path.resolve()
    if not resolved.is_file():
        raise OSError(f"no such file: {path}")
    name = f"lookahead_user_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    if name in sys.modules:  # imported already (a test, or the same flag twice)
        return
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


# --------------------------------------------------------------------------------------------
# Naming a configuration


def add_config_arguments(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    """``--import``, ``--config``, ``--window/--ngram/--guess-set`` and ``--set``."""
    group = parser.add_argument_group("lookahead configuration (unset: LookaheadConfig defaults)")
    group.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                       help="register strategies from a module or a .py file first (repeatable)")
    group.add_argument("--config", action="append" if many else "store", default=[] if many else None,
                       metavar="YAML", help="a LookaheadConfig YAML file" + (
                           " holding one mapping or a list of them (repeatable)" if many else ""))
    group.add_argument("--window", type=int, default=None, help="[W] window width; 0 disables lookahead")
    group.add_argument("--ngram", type=int, default=None, help="[N] n-gram size")
    group.add_argument("--guess-set", type=int, default=None, help="[G] drafts verified per step")
    group.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="any config field, dotted for strategy params: pool.name=lfu, pool.capacity=8, "
                            "realign=shift (repeatable; YAML values)")


SUGAR = {"window": "--window", "ngram": "--ngram", "guess_set": "--guess-set"}


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None,
                     base_origin: str = "config") -> LookaheadConfig:
    """The config ``base`` (a raw mapping, e.g. one entry of a ``--config`` file) with the sugar
    flags and ``--set`` applied, validated; errors name the flag or file that set the value."""
    data = normalize(dict(base or {}), base_origin)
    origins = {key: base_origin for key in flatten(data)}
    for field, flag in SUGAR.items():
        if getattr(args, field, None) is not None:
            data[field] = getattr(args, field)
            origins[field] = f"{flag} {getattr(args, field)}"
    for item in getattr(args, "sets", []):
        key, value = parse_set(item)
        assign(data, key, value, f"--set {item}")
        origins[key] = f"--set {item}"
    return validate(data, origins, base_origin)


def parse_set(item: str) -> tuple[str, Any]:
    """``"pool.capacity=8"`` -> ``("pool.capacity", 8)``: the value is read as YAML."""
    import yaml

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise CliError(f"--set {item}: expected KEY=VALUE, e.g. --set pool.capacity=8 or --set window=4")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def assign(data: dict[str, Any], key: str, value: Any, origin: str) -> None:
    """Set a dotted ``key`` in a nested mapping (a strategy given by name becomes a block)."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if isinstance(child, str):
            child = {"name": child}
        elif child is None:
            child = {}
        elif not isinstance(child, dict):
            raise CliError(f"{origin}: {part} is {child!r}, not a block with fields")
        node[part] = child
        node = child
    node[last] = value


def normalize(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """Strategy blocks given as a bare name become ``{"name": ...}`` (so ``--set`` can extend them)."""
    from strategies.base import ROLES

    if not isinstance(data, dict):
        raise CliError(f"{origin}: expected a mapping of LookaheadConfig fields (window, ngram, pool, ...), "
                       f"got {type(data).__name__}")
    for role in ROLES:
        if isinstance(data.get(role), str):
            data[role] = {"name": data[role]}
    return data


def validate(data: dict[str, Any], origins: dict[str, str], fallback: str = "config") -> LookaheadConfig:
    try:
        return LookaheadConfig.model_validate(data)
    except ValidationError as error:
        raise CliError(explain(error, origins, fallback)) from None


def explain(error: ValidationError, origins: dict[str, str], fallback: str = "config") -> str:
    """One ``origin: key: message (got value)`` per error; the origin is the flag or file that set
    the key (or the nearest enclosing or enclosed key that one did)."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        sizes = [origins[k] for k in ("window", "ngram", "guess_set", "max_step_tokens") if k in origins]
        origin = (_origin(key, origins) if key else (sizes[-1] if sizes else None)) or fallback
        message = str(item["msg"]).removeprefix("Value error, ")
        plain = origin.startswith("--set") or origin.split(" ")[0] in SUGAR.values() or message.startswith(key)
        where = origin if plain else f"{origin}: {key}"
        got = "" if "got " in message else f" (got {item.get('input')!r})"
        lines.append(f"{where}: {message}{got}")
    return "; ".join(lines)


def _origin(key: str, origins: dict[str, str]) -> str | None:
    parts = key.split(".")
    for end in range(len(parts), 0, -1):  # the key or an enclosing block
        if ".".join(parts[:end]) in origins:
            return origins[".".join(parts[:end])]
    inner = [origin for name, origin in origins.items() if name.startswith(key + ".")]
    return inner[-1] if inner else None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys: ``{'pool': {'name': 'lru'}}`` -> ``{'pool.name': 'lru'}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_config_file(path: str) -> list[tuple[str | None, dict[str, Any]]]:
    """``(label, raw mapping)`` for each config in a YAML file: one mapping or a list of them; an
    optional ``label`` key names the method in bench tables."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise CliError(f"--config {path}: {error}") from None
    items = data if isinstance(data, list) else [data]
    configs = []
    for index, item in enumerate(items):
        where = f"--config {path}" + (f" (entry {index})" if isinstance(data, list) else "")
        item = normalize(item, where)
        label = item.pop("label", None)
        configs.append((None if label is None else str(label), item))
    return configs


def single_config(args: argparse.Namespace) -> LookaheadConfig:
    """The one config of a command that decodes with one (generate, sampling_report)."""
    import_strategies(args.imports)
    if not args.config:
        return config_from_args(args)
    entries = read_config_file(args.config)
    if len(entries) != 1:
        raise CliError(f"--config {args.config}: holds {len(entries)} configs; this command takes one")
    return config_from_args(args, entries[0][1], f"--config {args.config}")


# --------------------------------------------------------------------------------------------
# Model, device, threads


def add_model_arguments(parser: argparse.ArgumentParser, *, dtype: str | None = "float32") -> None:
    from framework.models import DEFAULT_MODEL

    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help=f"folder, .gguf file or cached Hub name (default {DEFAULT_MODEL})")
    group.add_argument("--dtype", default=dtype, help="float32 (exact on CPU), bfloat16 or float16")
    group.add_argument("--attn", default="sdpa", help="attention implementation: sdpa, eager, lookahead_cascade "
                       "(prefix and tree block merged by log-sum-exp; flash-attn on CUDA: framework/cascade.py) or "
                       "lookahead_flex (FlexAttention over the step's BlockMask, compiled on CUDA: framework/flex.py)")
    group.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    group.add_argument("--threads", type=int_at_least(1), default=None,
                       help="torch CPU threads (default: the CPUs this process may use, less the machine's load)")
    group.add_argument("--compile", action="store_true",
                       help="run the engine's step through torch.compile at fixed shapes (CUDA graphs on a GPU); "
                            "the first call of each shape compiles (about a minute on a 2-core CPU)")


def auto_threads() -> int:
    """CPUs this process may use, less the 1-minute load average (rounded), at least 1: two busy
    processes with 2 threads each on 2 cores stall each other (docs/benchmarks.md)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = 0.0
    return max(1, min(cpus, cpus - round(load)))


def set_threads(requested: int | None) -> str:
    """Set torch's CPU threads (``requested`` or ``auto_threads()``); returns a note for the header."""
    import torch

    threads = requested if requested is not None else auto_threads()
    torch.set_num_threads(threads)
    return f"{threads} thread{'s' if threads > 1 else ''}" + ("" if requested is not None else " (auto; --threads N to fix)")


def load_model_from_args(args: argparse.Namespace, dtype: str | None = None):
    """``(model, tokenizer)`` for ``--model`` (the default model if unset); errors name the flag."""
    from framework.models import DEFAULT_MODEL, load_model, resolve_dtype

    if args.device is not None:
        check_device(args.device, f"--device {args.device}")
    try:
        resolve_dtype(dtype or args.dtype)
    except ValueError as error:
        raise CliError(f"--dtype {dtype or args.dtype}: {error}") from None
    try:
        return load_model(args.model, dtype=dtype or args.dtype, attn_implementation=args.attn, device=args.device)
    except (OSError, ValueError, ImportError) as error:
        raise CliError(f"--model {args.model or DEFAULT_MODEL}: {error}", status=1) from None


def check_device(device: str, flag: str) -> None:
    """Refuse, naming ``flag``, a device that is no device name or no usable CUDA device here."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise CliError(f"{flag}: {device!r} is not a device name; use cpu, cuda or cuda:N") from None
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if parsed.type == "cuda" and (parsed.index or 0) >= visible:
        raise CliError(f"{flag}: {device} is not a usable CUDA device here ({visible} visible); use cpu")


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command as typed (for headers and records)."""
    import shlex

    return " ".join([prog, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
