"""Evaluate CSNLN on benchmarks, or upscale your own images.

  python eval.py --ckpt PATH --data_test Set5+Set14 [--out DIR] [--chop] [--self_ensemble]
  python eval.py --model bicubic|bicubic_paper --data_test Set5 --scale 2 [--out DIR]
  python eval.py --ckpt PATH --input FILE_OR_DIR --output DIR

Every other --key value of default_config.yaml applies (--config FILE layers a YAML file).
The network's scale, depth, n_feats and rgb_range come from the checkpoint. Exit status:
0 success, 1 some --input images failed, 2 bad arguments or data.
"""
import sys

import torch
import yaml

from csnln import evaluate as ev
from csnln.checkpoint import CheckpointError, load_model
from csnln.config import ConfigError, load_config, parse_overrides
from csnln.images import ImageError

CHECKPOINT_KEYS = ("scale", "n_feats", "depth", "rgb_range")


def parse_args(argv):
    """-> (config dict, keys the user set explicitly). Handles --config and the --ckpt_file alias."""
    argv, config_path = list(argv), None
    rest = []
    i = 0
    while i < len(argv):
        token = argv[i]
        key, eq, value = token.partition("=")
        if key in ("--ckpt_file", "--ckpt-file"):
            token = "--ckpt" + eq + value
        if key == "--config":
            if eq:
                config_path, i = value, i + 1
            elif i + 1 < len(argv):
                config_path, i = argv[i + 1], i + 2
            else:
                raise ConfigError("--config needs a path")
            continue
        rest.append(token)
        i += 1
    overrides = parse_overrides(rest)
    explicit = {k.replace("-", "_") for k in overrides}
    if sum(t.split("=")[0] == "--ckpt" for t in rest) > 1:
        raise ConfigError("give the checkpoint once (--ckpt and --ckpt_file are the same option)")
    config = load_config(config_path, rest)
    if config_path:
        with open(config_path) as f:
            explicit |= {k.replace("-", "_") for k in (yaml.safe_load(f) or {})}
    return config, explicit


def pick_device(name):
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        raise ConfigError("device cuda was asked for but CUDA is not available; use --device cpu")
    return torch.device("cpu")


def build_upscaler(config, explicit, device):
    """-> (upscaler or None, scale, a description line)."""
    method = config["model"]
    if method not in ev.MODELS:
        raise ConfigError(f"config key 'model' must be one of {', '.join(ev.MODELS)}, got {method!r}")
    if method != "csnln":
        if config["ckpt"]:
            raise ConfigError(f"--ckpt is only used with --model csnln, not {method}")
        return None, config["scale"], f"{method}, x{config['scale']}"
    if not config["ckpt"]:
        raise ConfigError("--model csnln needs --ckpt PATH (or use --model bicubic / bicubic_paper)")
    expect = {k: config[k] for k in CHECKPOINT_KEYS if k in explicit}
    model, found = load_model(config["ckpt"], expect=expect, attention_backend=config["attention_backend"])
    model.eval().to(device)
    precision = "fp32" if config["precision"] == "auto" else config["precision"]
    upscaler = ev.NetworkUpscaler(model, found["scale"], found["rgb_range"], device, chop=config["chop"],
                                  self_ensemble=config["self_ensemble"], precision=precision)
    options = [o for o in ("chop", "self_ensemble") if config[o]]
    line = (f"CSNLN x{found['scale']} (n_feats {found['n_feats']}, depth {found['depth']}, "
            f"rgb_range {found['rgb_range']}) from {config['ckpt']} on {device}, {precision}"
            + "".join(f", {o}" for o in options))
    return upscaler, found["scale"], line


def main(argv):
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    try:
        config, explicit = parse_args(argv)
        device = pick_device(config["device"])
        upscaler, scale, line = build_upscaler(config, explicit, device)
        if config["input"] or config["output"]:
            if not (config["input"] and config["output"]):
                raise ConfigError("upscaling your own images needs both --input FILE_OR_DIR and --output DIR")
            if config["model"] == "bicubic_paper":
                raise ConfigError("--model bicubic_paper needs HR images; use --model csnln or bicubic with --input")
            inputs = ev.list_inputs(config["input"])
            if upscaler is None:
                upscaler = ev.BicubicUpscaler(scale)
            print(line, file=sys.stderr)
            written, failures = ev.upscale_files(upscaler, inputs, config["output"], scale)
            print(f"wrote {len(written)} image(s) to {config['output']}"
                  + (f"; {len(failures)} failed: " + ", ".join(str(p) for p, _ in failures) if failures else ""))
            return 1 if failures else 0
        if config["model"] != "csnln" and (config["chop"] or config["self_ensemble"]):
            print(f"note: --chop / --self_ensemble do not apply to --model {config['model']}", file=sys.stderr)
        print(line, file=sys.stderr)
        datasets = [d for d in str(config["data_test"]).split("+") if d]
        results = ev.evaluate(config["model"], datasets, scale, data_path=config["data_path"], upscaler=upscaler,
                              data_range=config["data_range"], metric=config["metric"],
                              out=config["out"] or None, save_results=config["save_results"])
    except (ConfigError, CheckpointError, ev.EvaluationError, ImageError) as e:
        print(f"eval.py: error: {e}", file=sys.stderr)
        return 2
    protocol = "DRCN/VDSR recipe" if config["model"] == "bicubic_paper" else f"{config['metric']} protocol"
    title = f"{config['model']} ({protocol}, Y channel, shave = scale)"
    print(ev.format_table(results, title))
    if config["out"]:
        print(f"results: {config['out']}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
