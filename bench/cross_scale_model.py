"""FLOP / byte model of the Triton cross-scale kernels (stencil form) on an H100 / H200, fp16.

Written before any GPU run, from the launchers' own band plan (kernels.cross_scale_triton
_fwd_bands / _bwd_bands): per band, each kernel's tensor-core work and its traffic, then
    time = sum over kernels of max(FLOP / MMA_RATE, bytes / bandwidth) + launches * LAUNCH_S
Traffic: every buffer element written once and read once per pass at HBM_BPS (buffers of a band
that fit L2 are faster: the model is pessimistic there); a 9-tap stencil read costs three
element reads (the dx taps share cache lines) from L2 at L2_BPS.

    python bench/cross_scale_model.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TRITON_INTERPRET", "1")   # import the launchers without a GPU driver

from kernels import cross_scale_triton as cst  # noqa: E402

MMA_RATE = 400e12   # FLOP/s a Triton tl.dot kernel sustains (40% of the 989 TFLOP/s dense fp16 peak)
HBM_BPS = 3.5e12    # bytes/s (73% of the H200's 4.8 TB/s)
L2_BPS = 7e12       # bytes/s, stencil re-reads
LAUNCH_S = 8e-6     # host time per Triton launch when kernels are shorter than it
CK, CV, E = 64, 128, 2  # channels, fp16 element size


def _kernel(flop=0.0, hbm=0.0, l2=0.0):
    return max(flop / MMA_RATE, hbm / HBM_BPS + l2 / L2_BPS)


def _bands(plan, H, W, L):
    """For each band of a (image groups, row bands) plan: the rows of R, of P and of the band
    itself, and the elements of one row of a buffer."""
    images, rows = plan
    for i0, i1 in images:
        for y0, y1 in rows:
            r_rows, p_rows = cst.band_rows(y0, y1, H, 2), cst.band_rows(y0, y1, H, 1)
            yield (*(b - a for a, b in (r_rows, p_rows, (y0, y1))), (i1 - i0) * W * L)


def forward_seconds(n, H, W, s, training):
    L, C = (H // s) * (W // s), CV * s * s
    plan = cst._fwd_bands(n, H, W, L, E, training)
    total, launches = 0.0, 0
    for _, _, cr, unit in _bands(plan, H, W, L):     # ring buffers: each band's new rows of R and P only
        total += _kernel(flop=2 * cr * unit * CK, hbm=4 * cr * unit)              # gram -> R
        total += _kernel(hbm=4 * cr * unit, l2=2 * 3 * 4 * cr * unit)             # probs: 2 passes
        total += _kernel(hbm=E * cr * unit, l2=3 * 4 * cr * unit)                 # spread -> P~
        total += _kernel(flop=2 * cr * unit * C, hbm=E * cr * unit * max(1, C // 128))  # out
        launches += 4
    return total + launches * LAUNCH_S, launches, plan[1]


def backward_seconds(n, H, W, s):
    L, C = (H // s) * (W // s), CV * s * s
    total, launches = 0.0, 0
    for rr, pr, cr, unit in _bands(cst._bwd_bands(n, H, W, L, E), H, W, L):
        total += _kernel(flop=2 * rr * unit * CK, hbm=4 * rr * unit)              # gram -> R
        total += _kernel(hbm=4 * pr * unit, l2=3 * 4 * pr * unit)                 # probs: 1 pass
        total += _kernel(hbm=E * cr * unit, l2=3 * 4 * cr * unit)                 # spread -> P~
        total += _kernel(flop=2 * cr * unit * C, hbm=E * cr * unit * max(1, C // 128))  # dv
        total += _kernel(flop=2 * pr * unit * C, hbm=4 * pr * unit)               # gram -> E
        total += _kernel(hbm=4 * cr * unit * 3, l2=2 * 3 * 4 * cr * unit)         # ds: 2 passes
        total += _kernel(hbm=E * pr * unit, l2=3 * 4 * pr * unit)                 # spread -> dR
        total += _kernel(flop=2 * pr * unit * CK, hbm=E * pr * unit)              # dq
        total += _kernel(flop=2 * pr * unit * CK, hbm=(E * pr + 4 * cr) * unit,
                         l2=3 * 4 * cr * unit)                                    # dk + S_raw
        launches += 9
    return total + launches * LAUNCH_S, launches


def extra_forward_bytes(n, H, W, s):
    """Band buffers of the forward: the R and P rings and P~, over the bands."""
    L = (H // s) * (W // s)
    return max(unit * (4 * (rr + pr) + E * cr) for rr, pr, cr, unit in _bands(cst._fwd_bands(n, H, W, L, E), H, W, L))


def main():
    print(f"model: {MMA_RATE / 1e12:.0f} TFLOP/s, HBM {HBM_BPS / 1e12:.1f} TB/s, L2 {L2_BPS / 1e12:.0f} TB/s, "
          f"{LAUNCH_S * 1e6:.0f} us a launch; Ck {CK}, Cv {CV}, fp16")
    print("| shape | inference fwd ms (launches, rows a band, extra MB) | training fwd ms | fwd+bwd ms |")
    print("|---|---|---|---|")
    for n, H, W, s in ((16, 48, 48, 2), (16, 48, 48, 3), (1, 192, 192, 2), (16, 96, 96, 2)):
        fwd, launches, rows = forward_seconds(n, H, W, s, training=False)
        train_fwd, _, _ = forward_seconds(n, H, W, s, training=True)
        bwd, _ = backward_seconds(n, H, W, s)
        print(f"| {n} x {H} x {W}, s {s} | {fwd * 1e3:.2f} ({launches}, {rows[0][1] - rows[0][0]}, "
              f"{extra_forward_bytes(n, H, W, s) / 2 ** 20:.0f}) | {train_fwd * 1e3:.2f} | "
              f"{(train_fwd + bwd) * 1e3:.2f} |")


if __name__ == "__main__":
    main()
