"""What the compile check reads out of a kernel's SASS: the global-memory instruction mix and
the tensor-core instructions per loop trip, and the rule for hot kernels' main operands."""
import re

NO_SPILLS = ("fp16", "bf16")   # dtypes whose kernels must not spill, nor load their main operands scalar
# hot kernels whose main operands (the streams named) must load 64 or 128 bits a lane, or go
# through cp.async / TMA, in fp16 / bf16, with at most the given number of 8- or 16-bit LDGs per
# wide one. The stencil's taps are group loads; ptxas narrows each dx = +-1 tap's load of the
# neighbouring group to the one key it uses (16 or 32 bits): 6 of them beside 18 wide ones.
WIDE_LOADS = {"_probs_kernel": ("q and k rows", 0), "_ds_kernel": ("P and dP rows", 0),
              "_stencil_kernel": ("the taps' key groups", 1)}


_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


# instructions of the 16-lane integer pipe (a warp instruction holds it two clocks); uniform-datapath
# (U*) instructions, conversions and the FMA / memory / control pipes are not among them
INT_PIPE = frozenset("IADD3 IADD IMAD IMUL ISETP IABS IMNMX VIMNMX VIADD LOP3 LOP SHF SHL SHR LEA SEL PRMT MOV "
                     "PLOP3 P2R R2P BMSK SGXT POPC FLO BREV".split())


def loop_bodies(sass):
    """[(head, tail, instructions, integer-pipe instructions)] of each loop (a backward branch; not
    the branch to itself after EXIT), by head address; a nested loop's instructions are also in
    the loops around it."""
    insns = [(int(a, 16), op) for a, op, _ in _INSN.findall(sass)]
    spans = sorted({(int(m.group(1), 16), a) for a, op, rest in _INSN.findall(sass) if op.startswith("BRA")
                    for a in [int(a, 16)] for m in [re.search(r"0x([0-9a-f]+)", rest)]
                    if m and int(m.group(1), 16) < a})
    return [(head, tail, sum(head <= a <= tail for a, _ in insns),
             sum(head <= a <= tail and op.split(".")[0] in INT_PIPE for a, op in insns)) for head, tail in spans]


def sass_mix(sass):
    """Global loads / stores by width, cp.async, TMA, and tensor-core instructions per trip of
    the innermost loop holding them (static counts of the SASS); hot_loop: (instructions,
    integer-pipe instructions) of the largest innermost loop's body, (0, 0) without a loop."""
    insns = [(int(a, 16), op, rest) for a, op, rest in _INSN.findall(sass)]
    mix = {}
    for _, op, _ in insns:
        base = op.split(".")[0]
        if base in ("LDG", "STG"):
            width = next((w for w in ("128", "64", "U16", "U8") if f".{w}" in op), "32")
            name = f"{base}.{width}"
        elif base in ("LDGSTS", "UTMALDG", "HGMMA", "HMMA"):
            name = base
        else:
            continue
        mix[name] = mix.get(name, 0) + 1
    mma_at = [a for a, op, _ in insns if op.startswith(("HGMMA", "HMMA"))]
    loops = [(int(m.group(1), 16), a) for a, op, rest in insns if op.startswith("BRA")
             for m in [re.search(r"0x([0-9a-f]+)", rest)] if m and int(m.group(1), 16) <= a]
    inner = [sum(head <= x <= tail for x in mma_at) for head, tail in loops if any(head <= x <= tail for x in mma_at)]
    spans = loop_bodies(sass)
    innermost = [(n, i) for head, tail, n, i in spans
                 if not any(head <= h2 and t2 <= tail and (h2, t2) != (head, tail) for h2, t2, _, _ in spans)]
    return dict(mix=mix, mma_per_trip=min(inner) if inner else 0, hot_loop=max(innermost, default=(0, 0)))


def mix_text(mix):
    order = ("LDG.128", "LDG.64", "LDG.32", "LDG.U16", "LDG.U8", "LDGSTS", "UTMALDG", "STG.128", "STG.64", "STG.32",
             "STG.U16")
    return " ".join(f"{k}:{mix[k]}" for k in order if k in mix)


def scalar_main_loads(dtype, kernel, row):
    """Why a hot kernel fails the wide-load rule (None when it passes)."""
    if kernel not in WIDE_LOADS or dtype not in NO_SPILLS:
        return None
    mix = row["mix"]
    streams, narrow_per_wide = WIDE_LOADS[kernel]
    wide = mix.get("LDG.128", 0) + mix.get("LDG.64", 0) + mix.get("LDGSTS", 0) + mix.get("UTMALDG", 0)
    if wide == 0 or mix.get("LDG.U16", 0) + mix.get("LDG.U8", 0) > narrow_per_wide * wide:
        return f"SCALAR LOADS ({streams})"
    return None
