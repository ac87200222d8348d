"""Train CSNLN.

    python train.py [--config PATH] [--key value ...]       one process, or --gpus N local processes
    torchrun --nproc_per_node N train.py [--key value ...]  one or more machines
Every key of default_config.yaml can be overridden as --key value.
"""
import sys

from csnln.config import ConfigError, load_config


def main(argv):
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            sys.exit("train.py: --config needs a path")
        config_path, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    try:
        config = load_config(config_path, argv)
    except ConfigError as e:
        sys.exit(f"train.py: {e}")
    from csnln.training import run
    run(config)


if __name__ == "__main__":
    main(sys.argv[1:])
