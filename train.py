"""Train CSNLN: python train.py [--config PATH] [--key value ...] (not implemented yet)."""
import sys

if __name__ == "__main__":
    sys.exit("train.py: the training harness is not implemented yet")
