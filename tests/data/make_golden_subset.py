"""Copy a compact subset of ../shared/reference golden vectors into tests/data/golden.

Lossless: inputs and state dicts were float32 values widened to float64, so they
are stored as float32; grad_out is float16 as shipped; outputs and gradients stay
float64. Intermediates other than `key_norm_clamped` are dropped.
Run from the repository root: python tests/data/make_golden_subset.py
"""
import pathlib

import torch

SOURCE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "reference"
TARGET = pathlib.Path(__file__).resolve().parent / "golden"
SUBSET = {
    "nonlocal_attention.pt": ["nonsquare", "odd"],
    "cross_scale_attention_s2.pt": ["nonsquare"],
    "cross_scale_attention_s2_keyfloor.pt": ["key_norm_floor"],
    "cross_scale_attention_s3_nonsquare.pt": ["nonsquare"],
}


def narrow(t):
    """float64 -> float32 when that is exact."""
    return t.float() if torch.equal(t.float().double(), t) else t


def main():
    TARGET.mkdir(exist_ok=True)
    for name, cases in SUBSET.items():
        full = torch.load(SOURCE / name, weights_only=True)
        kept = {key: full[key] for key in ("format", "module", "config", "module_seed")}
        kept["state_dict"] = {k: narrow(v) for k, v in full["state_dict"].items()}
        kept["cases"] = {}
        for case in cases:
            c = full["cases"][case]
            kept["cases"][case] = {
                "x": narrow(c["x"]), "grad_out": c["grad_out"], "out": c["out"],
                "grad_x": c["grad_x"], "grad_params": c["grad_params"],
                "intermediates": {k: v for k, v in c["intermediates"].items() if k == "key_norm_clamped"},
            }
        torch.save(kept, TARGET / name)
        print(name, (TARGET / name).stat().st_size)


if __name__ == "__main__":
    main()
