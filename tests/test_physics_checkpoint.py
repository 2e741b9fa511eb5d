"""Gradient checkpointing of the toy ecLand time loop (issue 13, deliverable 5).

The checkpointed loop (a first pass without graph, each chunk recomputed with its graph in
the backward pass) must give the same outputs and gradients as the plain loop, for every
kind of input (parameters, initial state, forcing), with output averaging and forcing rows
held over several steps, and the same second derivatives (double backward).
"""

import pytest
import torch

import ailand
from ailand.physics import model as pm

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    forcing = ailand.synthetic_forcing(["FR-Fon", "FI-Hyy", "SN-Dhr"], "2020-03-01", "2020-03-01", seed=1)
    model = ailand.ToyEcLand(dtype=F64, compile=False)
    f, st, _ = model.prepare(forcing)
    return model, {k: v[:12] for k, v in f.items()}, st


def _loss_and_grads(model, f, st, checkpoint):
    """A loss over averaged diagnostics, sampled states and the final state of a run of 12
    forcing rows held 2 steps each (24 steps, outputs every 3 steps), and its gradient with
    respect to two parameters (2 members), the initial soil moisture and skin temperature
    and one forcing variable."""
    p = model.param_tensors({
        "RSMIN": torch.tensor([[90.0], [150.0]], dtype=F64, requires_grad=True),
        "Z0M": torch.tensor(0.2, dtype=F64, requires_grad=True),
    })
    s0 = {k: v.detach().clone().requires_grad_(True) for k, v in model.initial_state(f, p).items()}
    f = dict(f, SWdown=f["SWdown"].clone().requires_grad_(True))
    out, final = model.simulate(f, p, st, s0, steps_per_output=3, outputs=["Qle", "T2m", "RH2m", "swvl1"],
                                forcing_repeat=2, checkpoint=checkpoint)
    y = out["Qle"].pow(2).mean() + out["T2m"].mean() + out["RH2m"].mean() + 100 * out["swvl1"].sum() + final["skt"].sum()
    wrt = [p["RSMIN"], p["Z0M"], s0["swvl"], s0["skt"], f["SWdown"]]
    return out, y, torch.autograd.grad(y, wrt)


@pytest.mark.parametrize("checkpoint", [True, 1, 5, 7, 100])
def test_checkpointed_gradients_equal_plain_ones(setup, checkpoint):
    model, f, st = setup
    out0, y0, g0 = _loss_and_grads(model, f, st, False)
    out1, y1, g1 = _loss_and_grads(model, f, st, checkpoint)
    for k in out0:
        assert torch.equal(out0[k], out1[k]), k  # the same operations: bit-identical outputs
    assert torch.equal(y0, y1)
    for a, b in zip(g1, g0):
        assert torch.isfinite(b).all() and b.abs().max() > 0
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-10


def test_checkpointed_second_derivatives_equal_plain_ones(setup):
    """Double backward (as in tangent-linear products by the double-backward trick)."""
    model, f, st = setup
    f = {k: v[:3] for k, v in f.items()}  # 6 steps: second derivatives of longer runs amplify rounding

    def second(checkpoint):
        p = model.param_tensors({"RSMIN": torch.tensor([[90.0], [150.0]], dtype=F64, requires_grad=True)})
        s0 = model.initial_state(f, p)
        out, _ = model.simulate(f, p, st, s0, steps_per_output=3, outputs=["Qle", "T2m"], forcing_repeat=2, checkpoint=checkpoint)
        y = out["Qle"].pow(2).mean() + out["T2m"].mean()
        (g,) = torch.autograd.grad(y, p["RSMIN"], create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), p["RSMIN"])
        return g.detach(), h

    g0, h0 = second(False)
    g1, h1 = second(4)  # a chunk boundary inside an output interval
    assert ((g1 - g0).abs().max() / g0.abs().max()).item() < 1e-10
    assert h0.abs().max() > 0 and ((h1 - h0).abs().max() / h0.abs().max()).item() < 1e-10


def test_checkpoint_setting_and_when_it_acts():
    model = ailand.ToyEcLand(compile=False)
    assert model.checkpoint == "auto"
    n = pm.CHECKPOINT_AUTO_STEPS
    assert model._chunk_length(8760, needs_grad=False, setting="auto") == 0  # no gradient: nothing to save
    assert model._chunk_length(n - 1, needs_grad=True, setting="auto") == 0
    assert model._chunk_length(8760, needs_grad=True, setting="auto") == 94  # ceil(sqrt(8760))
    assert model._chunk_length(100, needs_grad=True, setting=True) == 10
    assert model._chunk_length(100, needs_grad=True, setting=24) == 24
    assert model._chunk_length(100, needs_grad=True, setting=False) == 0
    for bad in (0, -3, "sometimes", 2.5):
        with pytest.raises(ValueError, match="checkpoint must be"):
            ailand.ToyEcLand(checkpoint=bad)


def test_checkpointed_run_without_gradient_is_the_plain_run(setup):
    model, f, st = setup
    p = model.param_tensors()
    with torch.no_grad():
        a, _ = model.simulate(f, p, st, outputs=["Qle", "swvl1"], checkpoint=True)
    b, _ = model.simulate(f, p, st, outputs=["Qle", "swvl1"], checkpoint=False)
    assert all(torch.equal(a[k], b[k]) for k in a)
