"""Run configuration: default_config.yaml, an optional user YAML, and --key value overrides."""
import difflib
import pathlib

import yaml

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "default_config.yaml"


class ConfigError(ValueError):
    """A bad configuration key or value; the message says what to change."""


def _read_yaml(path):
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return data


def _unknown(key, known):
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} (known keys are listed in {DEFAULT_CONFIG.name})")


def _coerce(key, value, default):
    """Give `value` the type of `default` (ints may become floats; None accepts anything)."""
    if default is None or value is None:
        return value
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
    elif isinstance(default, str):
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
        key, _, inline = token[2:].partition("=")
        if inline:
            out[key], i = yaml.safe_load(inline), i + 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[key], i = yaml.safe_load(argv[i + 1]), i + 2
        else:
            out[key], i = True, i + 1
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


def validate(config):
    checks = [
        ("scale", config["scale"] in (2, 3, 4), "2, 3 or 4"),
        ("precision", config["precision"] in ("auto", "fp32", "fp16", "bf16"), "auto, fp32, fp16 or bf16"),
        ("attention_backend", config["attention_backend"] in ("auto", "torch", "triton"), "auto, torch or triton"),
        ("device", config["device"] in ("auto", "cuda", "cpu"), "auto, cuda or cpu"),
        ("metric", config["metric"] in ("matlab", "edsr"), "matlab or edsr"),
        ("cache", config["cache"] in ("memory", "npy", "none"), "memory, npy or none"),
        ("patch_size", config["patch_size"] % config["scale"] == 0, f"a multiple of scale ({config['scale']})"),
        ("batch_size", config["batch_size"] >= 1, "at least 1"),
        ("depth", config["depth"] >= 1, "at least 1"),
        ("n_feats", config["n_feats"] >= 2 and config["n_feats"] % 2 == 0, "an even number >= 2"),
    ]
    for key, ok, rule in checks:
        if not ok:
            raise ConfigError(f"config key {key!r} must be {rule}, got {config[key]!r}")
