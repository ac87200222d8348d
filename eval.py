"""Evaluate CSNLN: python eval.py --ckpt PATH [--key value ...] (not implemented yet)."""
import sys

if __name__ == "__main__":
    sys.exit("eval.py: the evaluation harness is not implemented yet")
