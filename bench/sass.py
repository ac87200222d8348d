"""What the compile check reads out of a kernel's SASS: the global-memory instruction mix and
the tensor-core instructions per loop trip, and the rule for hot kernels' main operands."""
import re

NO_SPILLS = ("fp16", "bf16")   # dtypes whose kernels must not spill, nor load their main operands scalar
# hot kernels whose main operands (the streams named) must load 64 or 128 bits a lane, or go
# through cp.async / TMA, in fp16 / bf16: a scalar 16-bit LDG there is a failure. The stencil
# kernel is not listed: its shifted taps start at odd element offsets by construction, so its
# loads are 16-bit, one key a lane, coalesced (a warp reads 64 contiguous bytes of a key row).
WIDE_LOADS = {"_probs_kernel": "q and k rows", "_ds_kernel": "P and dP rows"}


_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def sass_mix(sass):
    """Global loads / stores by width, cp.async, TMA, and tensor-core instructions per trip of
    the innermost loop holding them (static counts of the SASS)."""
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
    return dict(mix=mix, mma_per_trip=min(inner) if inner else 0)


def mix_text(mix):
    order = ("LDG.128", "LDG.64", "LDG.32", "LDG.U16", "LDG.U8", "LDGSTS", "UTMALDG", "STG.128", "STG.64", "STG.32",
             "STG.U16")
    return " ".join(f"{k}:{mix[k]}" for k in order if k in mix)


def scalar_main_loads(dtype, kernel, row):
    """Why a hot kernel fails the wide-load rule (None when it passes)."""
    if kernel not in WIDE_LOADS or dtype not in NO_SPILLS:
        return None
    mix = row["mix"]
    wide = mix.get("LDG.128", 0) + mix.get("LDG.64", 0) + mix.get("LDGSTS", 0) + mix.get("UTMALDG", 0)
    if wide == 0 or mix.get("LDG.U16", 0):
        return f"SCALAR LOADS ({WIDE_LOADS[kernel]})"
    return None
