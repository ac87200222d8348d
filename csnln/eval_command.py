"""Evaluate CSNLN on benchmarks, or upscale your own images.

  python eval.py --input FILE_OR_DIR --output DIR [--ckpt PATH]
  python eval.py [--ckpt PATH] --data_test Set5+Set14 [--out DIR] [--chop] [--self_ensemble]
  python eval.py --model bicubic|bicubic_paper --data_test Set5 --scale 2 [--out DIR]

Without --ckpt the model that ships with csnln for --scale runs (x2 and x4: csnln/weights/MODEL_CARD.md).
The network's scale, depth, n_feats and rgb_range come from the checkpoint (one given here
must match). An installed copy runs the same as `csnln-eval`. Exit status: 0 success, 1 some
--input images failed, 2 bad arguments or data.
"""
import sys

from . import cli, evaluate


def main(argv=None):
    return cli.main("eval.py", __doc__, sys.argv[1:] if argv is None else argv, evaluate.run)
