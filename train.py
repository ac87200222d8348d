"""Train CSNLN.

  python train.py [--config PATH] [--key value ...]       one process, or --gpus N local processes
  python train.py --save DIR --resume auto [--key value]  continue a run with its stored options
  torchrun --nproc_per_node N train.py [--key value ...]  one or more machines
"""
import shlex
import sys

from csnln import cli


def train(config, explicit):
    from csnln.training import run
    run(config, explicit)


def interrupted(argv):
    """The command that continues the run: its own options, from its newest checkpoint if any."""
    command = ["python", "train.py", *cli.drop_options(argv, ("resume", "overwrite")), "--resume", "auto"]
    return f"interrupted; continue with: {shlex.join(command)}"


def main(argv):
    return cli.main("train.py", __doc__, argv, train, interrupted)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
