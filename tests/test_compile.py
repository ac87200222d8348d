"""torch.compile through both operators and the network: no graph break, compiled == eager.

The Triton backend runs as torch.library custom ops (the interpreter on the CPU), the torch
backend is traced. "aot_eager" compiles the graph and its backward without code generation,
which keeps these tests quick; fullgraph=True fails on any graph break.
"""
import pytest
import torch

from csnln import CSNLN
from tests.numerics import operator, rel_errs, run_with_grads

pytestmark = pytest.mark.usefixtures("fresh_seed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# compiled and eager run the same kernels and ops; aot_eager may only reorder fp32 sums
TOL = 1e-5


def _inputs(op):
    """-> ([q, k, v] leaves, grad_out of ones) at scale 2 for the cross-scale op."""
    s = 2 if op == "cross_scale" else 1
    q = torch.randn(2, 16, 8, 6, device=DEVICE)
    k = torch.randn(2, 16, 8 // s, 6 // s, device=DEVICE)
    v = torch.randn(2, 8, 8, 6, device=DEVICE)
    return [t.requires_grad_() for t in (q, k, v)], torch.ones(2, 8, 8 * s, 6 * s, device=DEVICE)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("op", ["cross_scale", "in_scale"])
def test_operators_compile_without_graph_breaks(op, backend):
    fn = operator(op, 2, backend)
    leaves, grad = _inputs(op)
    torch._dynamo.reset()
    assert torch._dynamo.explain(fn)(*leaves).graph_break_count == 0
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    errs = rel_errs(run_with_grads(compiled, leaves, grad), run_with_grads(fn, leaves, grad))
    assert max(errs) <= TOL, errs


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_network_compiles_without_graph_breaks(backend):
    model = CSNLN(scale=2, n_feats=8, depth=2, attention_backend=backend).to(DEVICE)
    x = torch.rand(1, 3, 8, 6, device=DEVICE)
    torch._dynamo.reset()
    assert torch._dynamo.explain(model)(x).graph_break_count == 0
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    params = [p for p in model.parameters() if p.requires_grad]
    eager_out = model(x)
    eager_grads = torch.autograd.grad(eager_out.sum(), params)
    out = compiled(x)
    grads = torch.autograd.grad(out.sum(), params)
    # one error over all parameter gradients: some are exactly zero in exact arithmetic (a bias
    # added to every key shifts each softmax row by a constant), and are rounding noise here
    flat = lambda ts: torch.cat([t.flatten() for t in ts])  # noqa: E731
    errs = rel_errs([out, flat(grads)], [eager_out, flat(eager_grads)])
    assert max(errs) <= TOL, errs
