"""The cross-scale line- and issue-bound model reproduces the measured kernels, and the compile
check reads global-memory widths, tensor-core instructions and loop bodies out of SASS."""
from bench import cross_scale_model, sass


def test_line_model_reproduces_the_measured_kernels_within_2x():
    rows = cross_scale_model.calibration()
    assert {name for name, _, _ in rows} == set(cross_scale_model.MEASURED_X2_MS)
    for name, measured, modelled in rows:
        assert 0.5 <= measured / modelled <= 2.0, (name, measured, modelled)


def test_launches_are_bound_by_lines_issue_or_integer_pipe():
    """A CTA of 4 warps running 1000 instructions, 600 on the integer pipe: 1200 clocks of issue
    (4 a clock), 1200 of the integer pipe (2 clocks each); 3000 lines: line-bound. Without lines:
    issue-bound; with more integer ones: integer-bound."""
    m = cross_scale_model
    insns = m.sass_insns(4, (100, 60), [(50, 30, 19)])      # 100 + 18 * 50, 60 + 18 * 30 per warp
    assert insns == (4000, 2400)
    launch = m.Launch("k", m.SMS, 3000, (0, 0), 0, 0, 4, 32, 0, insns)
    assert m.dominant(launch) == "lines" and launch.seconds() == 3000 / m.CLOCK + m.T_LAUNCH
    launch.lines = 0
    assert launch.bounds()["issue"] == 1000 / m.CLOCK and launch.bounds()["int"] == 1200 / m.CLOCK
    assert m.dominant(launch) == "int"
    launch.insns = (4000, 1000)
    assert m.dominant(launch) == "issue"


def test_stencil_passes_within_the_issue_25_target():
    """Issue 25's target per stencil pass at 16x48x48 s2: at most 0.05 ms a launch or 1.5x its
    DRAM time; the kernel of c16da6b was integer-pipe bound at about 7x that."""
    rows = [r for r in cross_scale_model.stencil_table() if r[0] == "16x48x48 s2"]
    assert [r[1] for r in rows] == ["P~ forward", "P~ backward", "dP + delta", "dR"]
    for shape, name, old, old_bound, new, bound, dram, target in rows:
        assert new <= target and old > 4 * target and old_bound == "int", (name, old, new, target)


def test_predictions_cover_every_bench_shape_with_the_band_plan():
    rows = cross_scale_model.predictions()
    assert [r[0] for r in rows] == ["16x48x48 s2", "16x48x48 s3", "16x96x96 s2", "1x192x192 s2"]
    for _, fwd, both, mib in rows:
        assert 0 < fwd < both and all(0 < float(m) <= 1024 for m in mib.split(" / "))


SASS = """
        /*0100*/                   LDG.E.128 R4, desc[UR6][R2.64] ;
        /*0110*/                   ISETP.GE.AND P1, PT, R0, 0x10, PT ;
        /*0120*/                   LDGSTS.E.BYPASS.128 [R9], desc[UR6][R10.64] ;
        /*0130*/                   HGMMA.64x64x16.F32 R24, gdesc[UR8], R24 ;
        /*0140*/                   HGMMA.64x64x16.F32 R24, gdesc[UR12], R24 ;
        /*0150*/               @P1 BRA 0x110 ;
        /*0160*/              @!P0 LDG.E.U16 R8, desc[UR6][R6.64] ;
        /*0170*/                   STG.E.64 desc[UR6][R2.64], R4 ;
"""


def test_sass_mix_counts_widths_and_mma_per_loop_trip():
    got = sass.sass_mix(SASS)
    assert got == {"mix": {"LDG.128": 1, "LDG.U16": 1, "LDGSTS": 1, "HGMMA": 2, "STG.64": 1}, "mma_per_trip": 2,
                   "hot_loop": (5, 1)}
    assert sass.loop_bodies(SASS) == [(0x110, 0x150, 5, 1)]   # the loop 0x110 .. 0x150: one ISETP
    row = dict(got)
    assert sass.scalar_main_loads("fp16", "_probs_kernel", row) is not None   # a U16 load among them
    row["mix"] = {"LDGSTS": 3}
    assert sass.scalar_main_loads("fp16", "_probs_kernel", row) is None
    assert sass.scalar_main_loads("fp16", "_stencil_kernel", got) is None   # one narrow load a wide one
    assert sass.scalar_main_loads("fp16", "_stencil_kernel", dict(mix={"LDG.U16": 9, "STG.U16": 1})) is not None
    assert sass.scalar_main_loads("fp16", "_stencil_kernel", dict(mix={"LDG.128": 1, "LDG.U16": 2})) is not None
    assert sass.scalar_main_loads("fp32", "_stencil_kernel", dict(mix={"LDG.32": 9})) is None
