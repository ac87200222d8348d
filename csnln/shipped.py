"""The models shipped inside the package (csnln/weights/, each described in its MODEL_CARD.md):
what eval.py runs when it is given no --ckpt."""
import pathlib

from .config import ConfigError

WEIGHTS = pathlib.Path(__file__).resolve().parent / "weights"
SHIPPED = {2: "csnln_x2_demo.pt", 4: "csnln_x4_demo.pt"}   # scale -> original-layout state dict in WEIGHTS


def shipped_checkpoint(scale):
    """-> the path of the shipped model of `scale` (2, 3 or 4); ConfigError naming the shipped
    scales when none ships for it."""
    if scale not in SHIPPED:
        scales = ", ".join(f"x{s}" for s in sorted(SHIPPED))
        raise ConfigError(f"no model of scale x{scale} ships with csnln (shipped: {scales}); "
                          f"give one with --ckpt PATH")
    return WEIGHTS / SHIPPED[scale]
