"""Evaluate CSNLN on benchmarks, or upscale your own images.

  python eval.py --ckpt PATH --data_test Set5+Set14 [--out DIR] [--chop] [--self_ensemble]
  python eval.py --model bicubic|bicubic_paper --data_test Set5 --scale 2 [--out DIR]
  python eval.py --ckpt PATH --input FILE_OR_DIR --output DIR

The network's scale, depth, n_feats and rgb_range come from the checkpoint (one given here
must match). Exit status: 0 success, 1 some --input images failed, 2 bad arguments or data.
"""
import sys

from csnln import cli, evaluate


def main(argv):
    return cli.main("eval.py", __doc__, argv, evaluate.run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
