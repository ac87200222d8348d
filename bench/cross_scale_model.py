"""Line- and issue-bound model of the cross-scale kernels on an H200 (fp16, Ck 64, Cv 128):
calibrated on the kernels that were measured, then applied to the ones that replaced them.

A kernel's time is set by the 128-byte lines its warps touch in L1, or by the instructions its
warps issue, not by FLOPs: one warp access costs one L1 wavefront per distinct line (lanes walking
a strided dimension: one line per element), one wavefront per clock per SM; each of the 4 SMSPs
issues one warp instruction per clock, and an integer-pipe instruction (16 lanes) holds its SMSP's
pipe INT_CLOCKS clocks; 132 SMs at CLOCK. Instructions per CTA come from the SASS: the static
count of each loop body (bench/sass.py `loop_bodies`, sm_90a) times its trips, plus the rest once.
Per launch:

    SM time = sum over residency rounds of max(k * lines_cta, lines_cta + sync_trips * T_SYNC
              + free_trips * T_FREE, tensor-core clocks of the round, k * insns_cta / 4,
              k * int_insns_cta * INT_CLOCKS / 4)
    kernel  = max(SM time of the busiest SM / CLOCK, DRAM bytes / DRAM_BW) + T_LAUNCH

(k co-resident CTAs share an L1 and the SMSPs; the latency chain of a CTA's dependent loop trips
shows when it is alone). cuBLAS GEMMs and torch copies: max(FLOP / GEMM_RATE, bytes / DRAM_BW) + T_LAUNCH.

Calibration (`calibration()`): the nine kernels of commit 322de4b (scalar loads with the lanes of a
warp along the strided dimension: one line per element) against the x2 training profile of
shared/measurements/h200-2026-12-04.md; tests/test_bench_tools.py asserts every kernel within 2x.

    python bench/cross_scale_model.py        # calibration table, then the current kernels' predictions
"""
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TRITON_INTERPRET", "1")   # import the launchers without a GPU driver

from bench import markdown  # noqa: E402
from kernels import cross_scale_triton as cst  # noqa: E402
from kernels.cross_scale_torch import band_rows  # noqa: E402

SMS, CLOCK = 132, 1.9e9          # SMs; clock at which one L1 line per clock per SM is reached
T_SYNC, T_FREE = 2500, 50        # exposed cycles per barrier loop trip / per stencil tap (fitted, old kernels)
T_LAUNCH = 3e-6                  # s per launch (launch, ramp, drain)
DRAM_BW = 4.0e12                 # B/s achievable of the 4.8 TB/s HBM3e
TC_PER_CLOCK = 660e12 / SMS / CLOCK   # fp16 tensor-core FLOP per clock per SM a good Triton kernel reaches
GEMM_RATE = 550e12               # cuBLAS fp16 GEMM, K >= 64
REGS, SMEM, THREADS = 65536, 227 * 1024, 2048
ISSUE = 4                        # warp instructions issued per clock per SM (one per SMSP)
INT_CLOCKS = 2                   # clocks an integer-pipe warp instruction holds its SMSP's 16-lane pipe
CK, CV, E = 64, 128, 2


@dataclass
class Launch:
    """One kernel launch: CTAs, L1 lines per CTA, (barrier trips, free trips) per CTA, DRAM bytes,
    tensor-core FLOPs, the CTA's warps / registers / shared bytes (occupancy), and its warp
    instructions (all, integer-pipe) from `sass_insns`."""
    name: str
    ctas: int
    lines: float
    trips: tuple
    dram: float
    flops: float
    warps: int
    regs: int
    smem: int = 0
    insns: tuple = (0, 0)

    def occupancy(self):
        per_warp = -(-self.regs * 32 // 256) * 256
        return max(1, min(REGS // (per_warp * self.warps), SMEM // self.smem if self.smem else 32,
                          THREADS // (32 * self.warps), 32))

    def bounds(self):
        """{term: seconds} of the busiest SM (lines, latency, tensor cores, issue, integer pipe),
        each summed over the residency rounds alone, and DRAM."""
        occ, left = self.occupancy(), -(-self.ctas // SMS)
        per_cta = dict(lines=self.lines, mma=self.flops / max(1, self.ctas) / TC_PER_CLOCK,
                       issue=self.insns[0] / ISSUE, int=self.insns[1] * INT_CLOCKS / ISSUE)
        latency = self.lines + self.trips[0] * T_SYNC + self.trips[1] * T_FREE
        terms = dict.fromkeys(("lines", "latency", "mma", "issue", "int", "sm"), 0.0)
        while left > 0:
            k = min(occ, left)
            round_terms = {**{t: k * c for t, c in per_cta.items()}, "latency": latency}
            for t, c in round_terms.items():
                terms[t] += c / CLOCK
            terms["sm"] += max(round_terms.values()) / CLOCK
            left -= k
        terms["dram"] = self.dram / DRAM_BW
        return terms

    def seconds(self):
        terms = self.bounds()
        return max(terms["sm"], terms["dram"]) + T_LAUNCH


def sass_insns(warps, total, loops):
    """(warp instructions, integer-pipe ones) of a CTA: total = the kernel's static (instructions,
    integer ones); loops = [(instructions, integer ones, trips)] with each loop body counted
    without the loops nested in it, trips = its executions per CTA (nested: outer x inner)."""
    return tuple(warps * (total[j] + sum((trips - 1) * body[j] for *body, trips in loops)) for j in (0, 1))


def library(name, flops, dram):
    """A cuBLAS GEMM or a torch copy: (name, seconds)."""
    return name, max(flops / GEMM_RATE, dram / DRAM_BW) + T_LAUNCH


def cdiv(a, b):
    return -(-a // b)


# ----------------------------------------------------------------------------- calibration: commit 322de4b

def _old_x2_launches(n=16, H=48, s=2):
    """One training call (forward with training bands, backward) of the 322de4b kernels at their
    H200-autotuned configs and ptxas registers / shared memory (fp16). Each of those kernels was one
    band for the whole batch at 16 x 48 x 48. Lines: scalar loads, lanes along the strided dimension.
    Instructions: their SASS at those configs (Triton 3.9, sm_90a: ../shared/tools/sm90_sass_dump.py
    on 322de4b; the measured binaries were Triton 3.6's), static (all, integer-pipe) counts."""
    W, L, C = H, (H // s) ** 2, CV * s * s
    P = n * H * W
    out = []
    # gram R = q^T k and E = Gs^T Vs: M128 N128 C32, 8 warps; per C step M + N/s... lines, + fp32 store
    for rows, c, sa, regs, total, body in ((H, CK, 1, 235, (3032, 2603), (267, 179)),
                                           (H, CK, 1, 235, (3032, 2603), (267, 179)),
                                           (H, C, s, 233, (3232, 2807), (463, 379))):
        it = cdiv(c, 32)
        out.append(Launch("_gram_kernel", cdiv(rows * W, 128) * cdiv(L, 128) * n, it * (32 * 128 / sa * 2) + 128 * 128,
                          (it + 1, 0), n * rows * W * L * 4, 2.0 * c * rows * W * L * n, 8, regs, 16384,
                          sass_insns(8, total, [(*body, it)])))
    frac = L / (cdiv(L, 64) * 64)
    nt = cdiv(L, 64)     # forward: stats + write, two key-tile loops each around a 9-tap loop
    out.append(Launch("_probs_kernel", cdiv(P, 32), cdiv(L, 64) * 32 * 64 * frac * 19 + 2 * 32 * 64 / 32,
                      (0, cdiv(L, 64) * 18), P * L * 12, 0, 4, 144, 512,
                      sass_insns(4, (3000, 1804), [(613, 53, nt), (473, 417, 9 * nt),
                                                   (150, 75, nt), (573, 518, 9 * nt)])))
    nt = cdiv(L, 128)    # backward recompute
    out.append(Launch("_probs_kernel", cdiv(P, 32), cdiv(L, 128) * 32 * 128 * L / (cdiv(L, 128) * 128) * 10,
                      (0, cdiv(L, 128) * 9), P * L * 8, 0, 8, 158, 0,
                      sass_insns(8, (1520, 1347), [(147, 76, nt), (602, 564, 9 * nt)])))
    for _ in range(3):                                                          # P~ (fwd, bwd), dR
        out.append(Launch("_spread_kernel", cdiv(P, 32) * cdiv(L, 64), 10 * 32 * 64 * frac, (0, 9), P * L * 6, 0, 4, 87,
                          0, sass_insns(4, (1200, 1029), [(468, 407, 9)])))
    out.append(Launch("_out_kernel", cdiv(P, 64) * cdiv(C, 256), cdiv(L, 32) * (64 * 32 + 256 * 32 / s) + 64 * 256 / 16,
                      (cdiv(L, 32) + 1, 0), P * L * 2 * 2 + C * L * 2 * n, 2.0 * C * P * L, 8, 178, 20480,
                      sass_insns(8, (2616, 2211), [(259, 154, cdiv(L, 32))])))
    out.append(Launch("_dv_kernel", cdiv(L, 128) * cdiv(C, 128) * n,
                      cdiv(H * W, 64) * (64 * 128 * L / (cdiv(L, 128) * 128) + 128 * 64 / s),
                      (cdiv(H * W, 64) + 1, 0), P * L * 2 * 4, 2.0 * C * P * L, 8, 255, 32768,
                      sass_insns(8, (2816, 2119), [(1438, 1259, cdiv(H * W, 64))])))
    frac128 = L / (cdiv(L, 128) * 128)
    out.append(Launch("_ds_kernel", cdiv(P, 32), cdiv(L, 128) * 32 * 128 * frac128 * 21, (0, cdiv(L, 128) * 18),
                      P * L * 16, 0, 8, 174, 1024,
                      sass_insns(8, (2488, 1955), [(383, 75, nt), (468, 427, 9 * nt),
                                                   (259, 158, nt), (468, 431, 9 * nt)])))
    out.append(Launch("_dq_kernel", cdiv(P, 64), cdiv(L, 32) * (64 * 32 + CK * 32) + 64 * CK / 16,
                      (cdiv(L, 32) + 1, 0), P * L * 2, 2.0 * CK * P * L, 4, 167, 8192,
                      sass_insns(4, (2040, 1678), [(222, 136, cdiv(L, 32))])))
    hw = cdiv(H * W, 64)
    out.append(Launch("_dk_kernel", cdiv(L, 64) * n, cdiv(H * W, 64) * (64 * 64 * frac + CK * 64) + cdiv(H * W, 64) * 10 * 64 * 64 * frac,
                      (cdiv(H * W, 64) + 1, cdiv(H * W, 64) * 9), P * L * 10, 2.0 * CK * P * L, 8, 238, 16384,
                      sass_insns(8, (2464, 2069), [(756, 653, hw), (722, 641, hw), (473, 434, 9 * hw)])))
    return out


# ms per training call in the x2 step (3 steps x 12 calls), H200 profile of 2026-12-04
MEASURED_X2_MS = {"_gram_kernel": 50.5 / 36, "_probs_kernel": 92.8 / 36, "_spread_kernel": 99.2 / 36,
                  "_out_kernel": 22.5 / 36, "_ds_kernel": 67.4 / 36, "_dk_kernel": 70.7 / 36, "_dv_kernel": 38.1 / 36}


def calibration():
    """[(kernel, measured ms, modelled ms)] per training call at 16 x 48 x 48, s 2."""
    model = {}
    for launch in _old_x2_launches():
        model[launch.name] = model.get(launch.name, 0.0) + launch.seconds() * 1e3
    return [(name, ms, model[name]) for name, ms in MEASURED_X2_MS.items()]


# ----------------------------------------------------------------------------- the current kernels

# autotune candidates the model takes for each kernel (fp16, Triton 3.9 ptxas: registers, shared
# bytes) and their SASS (bench/sass.py loop_bodies, sm_90a): static (instructions, integer-pipe ones)
# of the kernel and of its loop bodies, each without the loops nested in it
PROBS = dict(M=128, N=64, warps=8, regs=128, smem=73728, total={True: (1864, 661), False: (1008, 462)},
             loops={True: ((769, 193), (655, 198)), False: ((664, 200),)})
STENCIL = dict(M=16, N=128, warps=4, regs={False: 133, True: 128}, total={False: (880, 443), True: (1000, 466)},
               loop={False: (659, 264), True: (610, 184)})
DS = dict(M=64, N=64, warps=8, regs=94, total=(1016, 220), loop=(830, 174))
# the stencil kernel of c16da6b (one key a lane, 16-bit taps), the one this replaces: M64 N32 8 warps
STENCIL_C16DA6B = dict(M=64, N=32, warps=8, regs={False: 91, True: 122}, total={False: (560, 468), True: (696, 474)},
                       loops={False: ((84, 51), (231, 206)), True: ((205, 63), (167, 142))})


def _probs_launch(rows, g, W, L, stats):
    """Nine [M, CK] and [N, CK] operand tiles per key tile per pass (one line per pixel row of 64
    fp16 channels, cp.async), the P tile store (key-contiguous, 128-bit)."""
    m, nb = PROBS["M"], PROBS["N"]
    passes = 2 if stats else 1
    trips = cdiv(L, nb) * passes
    lines = trips * 9 * (m + nb) + cdiv(L, nb) * m * nb * E / 128
    insns = sass_insns(PROBS["warps"], PROBS["total"][stats], [(*body, cdiv(L, nb)) for body in PROBS["loops"][stats]])
    return Launch("probs", cdiv(rows * W, m) * g, lines, (0, 0), g * (rows * W * L * E + (rows * W + L) * CK * E),
                  2.0 * 9 * CK * rows * W * L * g * passes, PROBS["warps"], PROBS["regs"], PROBS["smem"], insns)


def _stencil_dram(rows, g, W, L, out_bytes, rowdot):
    """The source (and the weights) read once, the destination written once."""
    return g * rows * W * L * (E * (2 if rowdot else 1) + out_bytes)


def _stencil_launch(rows, g, W, w, L, out_bytes, rowdot):
    """Keys in groups of 8 (VEC, w % 8 == 0 at every bench shape), 16 keys a thread (ttgir:
    sizePerThread [1, 1, 8], threadsPerWarp [2, 16, 1] at N 128): a warp access covers 2 query rows
    of N keys. Per key tile 15 loads (9 taps, 6 neighbouring groups narrowed to one key) of N E
    bytes a row: the dy = 0 ones start on a line (rows of L E bytes, a multiple of 128 at every
    bench shape), the dy = +-1 ones dy w E bytes off (+7/8 line on average unless w E % 128 == 0);
    the store and the weight tile for delta aligned. The nine taps of a key tile are unrolled
    (independent loads): one exposed latency (T_FREE) per key tile, not per tap."""
    m, nb, vec = STENCIL["M"], STENCIL["N"], 8
    row = nb * E / 128
    off = 0.0 if (w * E) % 128 == 0 else 7 / 8
    per_access = m * nb / (32 * vec) * (32 * vec / nb)       # warp instructions x rows each = M rows
    lines = L / nb * per_access * (5 * row + 10 * (row + off) + nb * out_bytes / 128 + (row if rowdot else 0))
    insns = sass_insns(STENCIL["warps"], STENCIL["total"][rowdot], [(*STENCIL["loop"][rowdot], cdiv(L, nb))])
    return Launch("stencil", cdiv(rows * W, m) * g, lines, (0, cdiv(L, nb)), _stencil_dram(rows, g, W, L, out_bytes,
                  rowdot), 0, STENCIL["warps"], STENCIL["regs"][rowdot], 0, insns)


def _stencil_launch_c16da6b(rows, g, W, w, L, out_bytes, rowdot):
    """One key a lane, 32 consecutive keys a warp instruction (ttgir: sizePerThread [1, 1],
    threadsPerWarp [1, 32]): each of the nine shifted taps reads 64 bytes at an odd offset (1.5
    lines on average), the store 32 * out_bytes aligned bytes (one line), the weight tile for delta
    one line; a runtime loop over the nine taps inside each key tile."""
    k = STENCIL_C16DA6B
    m, nb = k["M"], k["N"]
    warp_rows = m * cdiv(nb, 32)          # warp instructions per access of a tile
    lines = cdiv(L, nb) * warp_rows * (9 * 1.5 + cdiv(32 * out_bytes, 128) + (1 if rowdot else 0))
    (outer, taps), nt = k["loops"][rowdot], cdiv(L, nb)
    insns = sass_insns(k["warps"], k["total"][rowdot], [(*outer, nt), (*taps, 9 * nt)])
    return Launch("stencil", cdiv(rows * W, m) * g, lines, (0, nt * 9), _stencil_dram(rows, g, W, L, out_bytes, rowdot),
                  0, k["warps"], k["regs"][rowdot], 0, insns)


def _ds_launch(rows, g, W, L):
    m, nb = DS["M"], DS["N"]
    lines = cdiv(rows * W, m) * m * nb * (E + 4 + E) / 128
    insns = sass_insns(DS["warps"], DS["total"], [(*DS["loop"], cdiv(rows * W, m))])
    return Launch("ds", cdiv(L, nb) * g, lines, (0, 0), g * rows * W * L * (E + 4 + E), 0, DS["warps"], DS["regs"], 0,
                  insns)


def stencil_passes(n, H, W, s, stencil=_stencil_launch):
    """[(pass, Launch)] of the stencil launches of one forward and one backward call (band plans)."""
    h, w = H // s, W // s
    L, C = h * w, CV * s * s
    out = []
    for backward in (False, True):
        images, rows = cst.plan(n, H, W, L, C, E, backward)
        for i0, i1 in images:
            for y0, y1 in rows:
                p0, p1 = band_rows(y0, y1, H, 1)
                g, cr, pr = i1 - i0, y1 - y0, p1 - p0
                out.append(("P~ backward" if backward else "P~ forward", stencil(cr, g, W, w, L, E, False)))
                if backward:
                    out += [("dP + delta", stencil(cr, g, W, w, L, 4, True)), ("dR", stencil(pr, g, W, w, L, E, False))]
    return out


def forward_parts(n, H, W, s, stencil=_stencil_launch):
    """[(name, seconds)] of one forward call: the launchers' own band plan."""
    L, C = (H // s) * (W // s), CV * s * s
    w = W // s
    images, rows = cst.plan(n, H, W, L, C, E, backward=False)
    parts = [library("layouts (pad q, k; unshuffle v)", 0, E * n * (2 * CK * H * W + 2 * CV * H * W)),
             library("key norms", 0, E * n * CK * L * 9)]
    for i0, i1 in images:
        g = i1 - i0
        for y0, y1 in rows:
            p0, p1 = band_rows(y0, y1, H, 1)
            parts.append(("probs", _probs_launch(p1 - p0, g, W, L, True).seconds()))
            parts.append(("stencil", stencil(y1 - y0, g, W, w, L, E, False).seconds()))
            parts.append(library("out GEMM (cuBLAS)", 2.0 * C * (y1 - y0) * W * L * g,
                                 E * g * ((y1 - y0) * W * (L + C) + L * C)))
            parts.append(library("pixel-shuffle copy", 0, 2 * E * g * (y1 - y0) * W * C))
    return parts


def backward_parts(n, H, W, s, stencil=_stencil_launch):
    L, C = (H // s) * (W // s), CV * s * s
    w = W // s
    images, rows = cst.plan(n, H, W, L, C, E, backward=True)
    parts = [library("layouts (pad, tokens, unshuffle dL/dout)", 0, E * n * (4 * CK * H * W + 2 * C * H * W)),
             library("key-norm gradient, output copies", 0, 4 * n * (2 * CK * H * W + CV * H * W * 2))]
    for i0, i1 in images:
        g = i1 - i0
        for y0, y1 in rows:
            p0, p1 = band_rows(y0, y1, H, 1)
            pr, cr = p1 - p0, y1 - y0
            parts += [("probs", _probs_launch(pr, g, W, L, False).seconds()),
                      ("stencil", stencil(cr, g, W, w, L, E, False).seconds()),
                      library("dV GEMM (cuBLAS)", 2.0 * C * cr * W * L * g, E * g * cr * W * (L + C) + 8 * g * L * C),
                      library("E GEMM (cuBLAS)", 2.0 * C * pr * W * L * g, E * g * pr * W * (L + C)),
                      ("stencil", stencil(cr, g, W, w, L, 4, True).seconds()),
                      ("ds", _ds_launch(cr, g, W, L).seconds()),
                      ("stencil", stencil(pr, g, W, w, L, E, False).seconds()),
                      library("dq, dk GEMMs (cuBLAS)", 4.0 * CK * pr * W * L * g, 2 * E * g * pr * W * L)]
    return parts


def summed(parts):
    total = {}
    for name, sec in parts:
        total[name] = total.get(name, 0.0) + sec
    return total


SHAPES = ((16, 48, 2), (16, 48, 3), (16, 96, 2), (1, 192, 2))


def predictions(stencil=_stencil_launch):
    """[(shape, forward ms, forward+backward ms, band buffers MiB "fwd / bwd")]."""
    rows = []
    for n, H, s in SHAPES:
        L, C = (H // s) ** 2, CV * s * s
        fwd, bwd = forward_parts(n, H, H, s, stencil), backward_parts(n, H, H, s, stencil)
        mib = []
        for backward in (False, True):
            images, bands = cst.plan(n, H, H, L, C, E, backward)
            r = max(y1 - y0 for y0, y1 in bands)
            halo = H if len(bands) == 1 else min(H, r + 2)
            mib.append(max(i1 - i0 for i0, i1 in images) * cst.band_bytes(r, halo, H, L, C, E, backward) / 2 ** 20)
        rows.append((f"{n}x{H}x{H} s{s}", sum(t for _, t in fwd) * 1e3, sum(t for _, t in fwd + bwd) * 1e3,
                     f"{mib[0]:.0f} / {mib[1]:.0f}"))
    return rows


def dominant(launch):
    """The name of the term that sets a launch's time."""
    terms = launch.bounds()
    return max((t for t in terms if t != "sm"), key=terms.get)


def stencil_table():
    """[(shape, pass, c16da6b ms and bound, new ms and bound, DRAM ms, target ms)] per launch kind
    (the passes of one forward and one backward call, summed over bands), target = max(0.05 ms per
    launch, 1.5 x DRAM)."""
    rows = []
    for n, H, s in SHAPES:
        old, new = stencil_passes(n, H, H, s, _stencil_launch_c16da6b), stencil_passes(n, H, H, s)
        for name in dict.fromkeys(p for p, _ in new):
            pick = lambda launches: [la for p, la in launches if p == name]  # noqa: E731
            o, w = pick(old), pick(new)
            dram = sum(la.dram for la in w) / DRAM_BW
            rows.append((f"{n}x{H}x{H} s{s}", name, sum(la.seconds() for la in o) * 1e3, dominant(o[0]),
                         sum(la.seconds() for la in w) * 1e3, dominant(w[0]), dram * 1e3,
                         max(0.05e-3 * len(w), 1.5 * dram) * 1e3))
    return rows


def main():
    print("Calibration: the 322de4b kernels, one training call at 16x48x48 s2 (x2 step profile, H200)")
    bound = {}
    for launch in _old_x2_launches():
        bound.setdefault(launch.name, dominant(launch))
    print(markdown.table(["kernel", "measured ms", "model ms", "measured / model", "bound"],
                         [[k, f"{m:.3f}", f"{p:.3f}", f"{m / p:.2f}", bound[k]] for k, m, p in calibration()]))
    print("\nPrediction (fp16, Ck 64, Cv 128; GPU time, host time not included), stencil of c16da6b -> now")
    print(markdown.table(["shape", "forward ms", "forward+backward ms", "band buffers MiB fwd / bwd"],
                         [[a, f"{b0:.3f} -> {b:.3f}", f"{c0:.3f} -> {c:.3f}", d] for (a, b0, c0, _), (_, b, c, d)
                          in zip(predictions(_stencil_launch_c16da6b), predictions())]))
    print("\nStencil passes of one forward and one backward call (ms, summed over bands; bound: the largest term)")
    print(markdown.table(["shape", "pass", "c16da6b", "now", "DRAM", "target"],
                         [[a, b, f"{c:.3f} ({d})", f"{e:.3f} ({f})", f"{g:.3f}", f"{t:.3f}"]
                          for a, b, c, d, e, f, g, t in stencil_table()]))
    for n, H, s in SHAPES[:1] + SHAPES[3:]:
        parts = summed(forward_parts(n, H, H, s) + backward_parts(n, H, H, s))
        print(f"\n{n}x{H}x{H} s{s} forward+backward by part (ms): "
              + ", ".join(f"{k} {v * 1e3:.3f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
