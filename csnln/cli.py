"""The one command line of train.py and eval.py.

    prog [--config PATH] [--key value | --key=value | --flag ...] [-h | --help]

Keys are those of default_config.yaml; a key of the other tool is refused on the command
line (a --config file may hold both, as a run's shared settings). Exit status: 0 done,
1 the work ran but part of it failed, 2 a user error (one line on stderr, no traceback),
130 interrupted.
"""
import sys

import yaml

from .config import ConfigError, UserError, load_config, options, parse_overrides

ALIASES = {"ckpt_file": "ckpt"}


def help_text(prog, doc):
    lines = [doc.strip(), "", "options (default: meaning):", "  --config PATH: a YAML file of keys, layered on "
             "the defaults; command-line options override it", "  -h, --help: this help"]
    for key, (default, meaning, tools) in options().items():
        if prog in tools:
            lines.append(f"  --{key} {yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}"
                         f": {meaning}")
    return "\n".join(lines)


def parse(prog, argv):
    """argv -> (config, keys the user set on the command line or in --config)."""
    rest, config_path, i = [], None, 0
    while i < len(argv):
        key, eq, value = argv[i].partition("=")
        if key == "--config":
            if (eq and not value) or (not eq and (i + 1 >= len(argv) or argv[i + 1].startswith("--"))):
                raise ConfigError("--config needs a path")
            config_path, i = (value, i + 1) if eq else (argv[i + 1], i + 2)
            continue
        if key.startswith("--") and key[2:].replace("-", "_") in ALIASES:
            key = "--" + ALIASES[key[2:].replace("-", "_")]
        rest.append(key + eq + value)
        i += 1
    given = [k.replace("-", "_") for k in parse_overrides(rest)]
    known = options()
    for key in given:
        if key in known and prog not in known[key][2]:
            raise ConfigError(f"--{key} is an option of {' and '.join(known[key][2])}; {prog} does not use it")
    if len([t for t in rest if t.partition("=")[0] == "--ckpt"]) > 1:
        raise ConfigError("give the checkpoint once (--ckpt and --ckpt_file are the same option)")
    config = load_config(config_path, rest)
    explicit = set(given)
    if config_path:
        with open(config_path) as f:
            explicit |= {k.replace("-", "_") for k in yaml.safe_load(f) or {}}
    return config, explicit


def drop_options(argv, keys):
    """argv without the options named in `keys` (with their values: `--key value`, `--key=value`
    or a bare flag)."""
    kept, i = [], 0
    while i < len(argv):
        token = argv[i]
        step = 2 if "=" not in token and i + 1 < len(argv) and not argv[i + 1].startswith("--") else 1
        if token.partition("=")[0][2:].replace("-", "_") not in keys:
            kept += argv[i:i + step]
        i += step
    return kept


def main(prog, doc, argv, body, interrupted=None):
    """Run body(config, explicit) -> exit status, under the conventions above.

    `interrupted(config, argv)` gives the line printed on Ctrl-C (default: "interrupted")."""
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(prog, doc))
        return 0
    config = None
    try:
        config, explicit = parse(prog, argv)
        return body(config, explicit) or 0
    except UserError as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        line = interrupted(config, argv) if interrupted and config else "interrupted"
        print(f"{prog}: {line}", file=sys.stderr)
        return 130
