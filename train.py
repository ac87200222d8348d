"""Train CSNLN.

  python train.py [--config PATH] [--key value ...]       one process, or --gpus N local processes
  python train.py --save DIR --resume auto [--key value]  continue a run with its stored options
  torchrun --nproc_per_node N train.py [--key value ...]  one or more machines (README: Multi-node)
"""
import pathlib
import shlex
import sys

from csnln import cli, launch


def train(config, explicit):
    from csnln.training import run
    run(config, explicit)


def interrupted(config, argv):
    """The command that continues the run (python train.py or the torchrun command that started it):
    its own options with --resume auto (from its newest checkpoint, or afresh), or its --resume PATH
    while it has written no checkpoint."""
    saved = any(pathlib.Path(config["save"], "checkpoints").glob("epoch_*.pt"))
    resume = ["--resume", "auto"] if saved or config["resume"] in ("", "auto") else ["--resume", config["resume"]]
    command = [*launch.command(argv), *cli.drop_options(argv, ("resume", "overwrite")), *resume]
    return f"interrupted; continue with: {shlex.join(command)}"


def main(argv):
    return cli.main("train.py", __doc__, argv, train, interrupted)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
