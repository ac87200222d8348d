"""Train CSNLN.

  python train.py [--config PATH] [--key value ...]       one process, or --gpus N local processes
  python train.py --save DIR --resume auto [--key value]  continue a run with its stored options
  torchrun --nproc_per_node N train.py [--key value ...]  one or more machines
"""
import sys

from csnln import cli


def train(config, explicit):
    from csnln.training import run
    run(config, explicit)


def interrupted(config):
    return f"interrupted; continue with: python train.py --save {config['save']} --resume auto"


def main(argv):
    return cli.main("train.py", __doc__, argv, train, interrupted)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
