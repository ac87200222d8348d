"""eval.py: see csnln/eval_command.py (`python eval.py --help`)."""
import sys

from csnln.eval_command import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
