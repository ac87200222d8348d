"""The cross-scale line-access model reproduces the measured kernels, and the compile check
reads global-memory widths and tensor-core instructions out of SASS."""
from bench import cross_scale_model, sass


def test_line_model_reproduces_the_measured_kernels_within_2x():
    rows = cross_scale_model.calibration()
    assert {name for name, _, _ in rows} == set(cross_scale_model.MEASURED_X2_MS)
    for name, measured, modelled in rows:
        assert 0.5 <= measured / modelled <= 2.0, (name, measured, modelled)


def test_predictions_cover_every_bench_shape_with_the_band_plan():
    rows = cross_scale_model.predictions()
    assert [r[0] for r in rows] == ["16x48x48 s2", "16x48x48 s3", "16x96x96 s2", "1x192x192 s2"]
    for _, fwd, both, mib in rows:
        assert 0 < fwd < both and all(0 < float(m) <= 1024 for m in mib.split(" / "))


SASS = """
        /*0100*/                   LDG.E.128 R4, desc[UR6][R2.64] ;
        /*0110*/              @!P0 LDG.E.U16 R8, desc[UR6][R6.64] ;
        /*0120*/                   LDGSTS.E.BYPASS.128 [R9], desc[UR6][R10.64] ;
        /*0130*/                   HGMMA.64x64x16.F32 R24, gdesc[UR8], R24 ;
        /*0140*/                   HGMMA.64x64x16.F32 R24, gdesc[UR12], R24 ;
        /*0150*/               @P1 BRA 0x120 ;
        /*0160*/                   STG.E.64 desc[UR6][R2.64], R4 ;
"""


def test_sass_mix_counts_widths_and_mma_per_loop_trip():
    got = sass.sass_mix(SASS)
    assert got == {"mix": {"LDG.128": 1, "LDG.U16": 1, "LDGSTS": 1, "HGMMA": 2, "STG.64": 1}, "mma_per_trip": 2}
    row = dict(got)
    assert sass.scalar_main_loads("fp16", "_probs_kernel", row) is not None   # a U16 load among them
    row["mix"] = {"LDGSTS": 3}
    assert sass.scalar_main_loads("fp16", "_probs_kernel", row) is None
    assert sass.scalar_main_loads("fp16", "_stencil_kernel", got) is None
