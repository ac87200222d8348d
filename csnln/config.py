"""Run configuration: default_config.yaml, an optional user YAML, and --key value overrides."""
import difflib
import pathlib
import re

import yaml

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent / "default_config.yaml"


class UserError(Exception):
    """A mistake the user can fix (arguments, files, data); the message says what to change."""


class ConfigError(UserError, ValueError):
    """A bad configuration key or value; the message says what to change."""


def _read_yaml(path):
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return data


def options():
    """The keys of default_config.yaml -> (default, one-line meaning, tools that read it), in file order."""
    defaults = _read_yaml(DEFAULT_CONFIG)
    out, tools = {}, ()
    for line in DEFAULT_CONFIG.read_text().splitlines():
        section = re.match(r"# == .*\((.*)\)\s*$", line)
        if section:
            tools = tuple(t.strip() for t in section.group(1).split(","))
        entry = re.match(r"(\w+):.*?#\s*(.*)$", line)
        if entry:
            out[entry.group(1)] = (defaults[entry.group(1)], entry.group(2), tools)
    return out


def _unknown(key, known):
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} (known keys are listed in {DEFAULT_CONFIG.name})")


AUTO_OR_BOOL = ("channels_last",)   # keys that take true, false or auto
AUTO_OR_INT = ("tile",)             # keys that take a whole number or auto


def _coerce(key, value, default):
    """Give `value` the type of `default` (ints may become floats; an empty value only suits strings)."""
    if key in AUTO_OR_BOOL:
        if value == "auto" or isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects true, false or auto, got {value!r}")
    if key in AUTO_OR_INT:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise ConfigError(f"config key {key!r} expects a whole number or auto, got {value!r}")
    if value is None:
        if isinstance(default, str):
            return ""
        raise ConfigError(f"config key {key!r} needs a value (like {default!r})")
    if isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            value = float(value) if isinstance(default, float) else int(value)
        except ValueError:
            pass
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(default, str) and not isinstance(value, (bool, list, dict)):
        return str(value)
    elif isinstance(default, list) and isinstance(value, list):
        return value
    raise ConfigError(f"config key {key!r} expects {type(default).__name__} (like {default!r}), got {value!r}")


def parse_overrides(argv):
    """['--lr', '2e-4', '--chop', ...] -> {'lr': 2e-4, 'chop': True, ...}; bare flags mean true."""
    out, i = {}, 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"expected --key value, got {token!r}")
        key, eq, inline = token[2:].partition("=")
        if eq:
            value, i = inline, i + 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value, i = argv[i + 1], i + 2
        else:
            out[key], i = True, i + 1
            continue
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--{key}: cannot read the value {value!r}") from None
    return out


def load_config(path=None, overrides=None):
    """Defaults, then the YAML at `path`, then `overrides` (a dict or an argv list) -> dict."""
    config = _read_yaml(DEFAULT_CONFIG)
    layers = []
    if path:
        layers.append(_read_yaml(path))
    if overrides:
        layers.append(parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides))
    for layer in layers:
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key not in config:
                raise _unknown(key, list(config))
            config[key] = _coerce(key, value, config[key])
    validate(config)
    return config


def parse_range(data_range):
    """'1-800/801-810' -> ((1, 800), (801, 810)); one part serves as both."""
    try:
        parts = [tuple(int(x) for x in p.split("-")) for p in str(data_range).split("/")]
        train, test = (parts + parts)[:2]
        if len(parts) > 2 or len(train) != 2 or len(test) != 2:
            raise ValueError
    except ValueError:
        raise ConfigError(f"config key 'data_range' must look like 1-800/801-810, got {data_range!r}") from None
    for first, last in (train, test):
        if first < 1 or last < first:
            raise ConfigError(f"config key 'data_range': {first}-{last} is not a range of image numbers from 1")
    return train, test


def milestones(decay):
    """'200' or '200-400-600' -> [200] or [200, 400, 600] (epochs)."""
    try:
        epochs = [int(x) for x in str(decay).split("-")]
    except ValueError:
        epochs = [0]
    if min(epochs) < 1:
        raise ConfigError(f"config key 'decay' must be epochs like 200 or 200-400-600, got {decay!r}")
    return epochs


def validate(config):
    parse_range(config["data_range"])
    milestones(config["decay"])
    checks = [
        ("scale", config["scale"] in (2, 3, 4), "2, 3 or 4"),
        ("precision", config["precision"] in ("auto", "fp32", "fp16", "bf16"), "auto, fp32, fp16 or bf16"),
        ("attention_backend", config["attention_backend"] in ("auto", "torch", "triton"), "auto, torch or triton"),
        ("device", config["device"] in ("auto", "cuda", "cpu"), "auto, cuda or cpu"),
        ("metric", config["metric"] in ("matlab", "edsr"), "matlab or edsr"),
        ("cache", config["cache"] in ("memory", "npy", "none"), "memory, npy or none"),
        ("patch_size", config["patch_size"] > 0 and config["patch_size"] % config["scale"] == 0,
         f"a positive multiple of scale ({config['scale']})"),
        ("batch_size", config["batch_size"] >= 1, "at least 1"),
        ("depth", config["depth"] >= 1, "at least 1"),
        ("n_feats", config["n_feats"] >= 2 and config["n_feats"] % 2 == 0, "an even number >= 2"),
        ("rgb_range", config["rgb_range"] > 0, "positive"),
        ("epochs", config["epochs"] >= 1, "at least 1"),
        ("test_every", config["test_every"] >= 1, "at least 1"),
        ("max_minutes", config["max_minutes"] >= 0, "0 (no limit) or more"),
        ("print_every", config["print_every"] >= 1, "at least 1"),
        ("keep_checkpoints", config["keep_checkpoints"] >= 1, "at least 1"),
        ("checkpoint_every", config["checkpoint_every"] >= 0, "0 (at each epoch's end only) or more"),
        ("gpus", config["gpus"] >= 1, "at least 1"),
        ("n_threads", config["n_threads"] >= 0, "0 or more"),
        ("lr", config["lr"] > 0, "positive"),
        ("gamma", config["gamma"] > 0, "positive"),
        ("ema_decay", 0 <= config["ema_decay"] < 1, "in [0, 1)"),
        ("betas", len(config["betas"]) == 2 and all(isinstance(b, (int, float)) for b in config["betas"]),
         "two numbers like [0.9, 0.999]"),
    ]
    for key, ok, rule in checks:
        if not ok:
            raise ConfigError(f"config key {key!r} must be {rule}, got {config[key]!r}")
