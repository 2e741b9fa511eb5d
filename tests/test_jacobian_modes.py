"""Forward-mode and reverse-mode Jacobians agree (issue 11, item 7).

``calibration.batched_jacobian`` picks forward mode (``d`` tangent passes) when ``d < m``
and reverse mode (``m`` adjoint passes) otherwise; every H of the project (Problem.jacobian,
the Gauss-Newton posterior, the twin) goes through it. Small configurations: a few days,
one site.
"""

import warnings

import numpy as np
import pytest
import torch

import ailand
import calibration as cal
from ailand.emulator import Emulator
from calibration.forward import jacobian_mode

pytestmark = pytest.mark.usefixtures("one_thread")


def analytic(x):
    """d = 5 -> m = 3, rows independent, with a clamp and a where (non-smooth ops)."""
    a, b, c, d, e = x.unbind(-1)
    return torch.stack([a * torch.exp(b) + torch.clamp(c, min=0.0) * d,
                        torch.where(e > 0, e**3, -e) + a * b * c,
                        torch.sin(d) * torch.log1p(e**2) + b], dim=-1)


def test_mode_rule_by_shape():
    assert jacobian_mode(2, 40) == "forward"
    assert jacobian_mode(5, 3) == "reverse"
    assert jacobian_mode(4, 4) == "reverse"
    assert jacobian_mode(5, 3, "forward") == "forward"
    with pytest.raises(ValueError, match="mode must be one of"):
        jacobian_mode(2, 3, "jvp")
    with pytest.raises(ValueError, match="mode must be one of"):
        cal.batched_jacobian(analytic, torch.ones(5, dtype=torch.float64), mode="fwd")


def test_analytic_problem_d_greater_than_m_forward_equals_reverse():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 1.5, size=(3, 5))
    x[1, 2], x[2, 4] = -0.3, -0.7  # the other branches of the clamp and the where
    Jr = cal.batched_jacobian(analytic, x, mode="reverse")
    Jf = cal.batched_jacobian(analytic, x, mode="forward")
    Ja = cal.batched_jacobian(analytic, x)  # auto: d = 5 > m = 3 -> reverse
    assert Jr.shape == (3, 3, 5) and Jr.dtype == torch.float64
    np.testing.assert_allclose(Jf.numpy(), Jr.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(Ja.numpy(), Jr.numpy())
    problem = cal.Problem(analytic, np.zeros(3), obs_std=1.0, prior=(np.ones(5), np.eye(5)))
    Hf = problem.jacobian(x[0], mode="forward")
    Hr = problem.jacobian(x[0], mode="reverse")
    assert Hf.shape == (3, 5)
    np.testing.assert_allclose(Hf, Hr, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(problem.jacobian(x[0]), Hr, rtol=0, atol=0)


@pytest.fixture(scope="module")
def window():
    forcing = ailand.synthetic_forcing(["FR-Fon"], "2020-06-01", "2020-06-05", seed=0)
    physics = ailand.ToyEcLand(dtype=torch.float64, compile=False)
    space = physics.space.subset(["RSMIN", "KSAT"])  # both log-scale: z = ln x in the control space
    observe = cal.Observe(["Qle", "swvl1"], freq="6h")  # 2 variables x 20 blocks = m = 40
    state0 = physics.initial_conditions(forcing, spinup_years=0)
    return forcing, physics, space, observe, state0


@pytest.mark.parametrize("which", ["physics", "emulator"])
def test_forward_d2_m40_forward_equals_reverse(window, which):
    forcing, physics, space, observe, state0 = window
    model = physics if which == "physics" else Emulator.default()
    F = cal.Forward(model, forcing, space, observe, state0=state0)
    assert (F.n_obs, len(space)) == (40, 2)
    x = np.array([[100.0, 5e-6], [160.0, 2e-6]])
    Jr = F.jacobian(torch.as_tensor(x), mode="reverse").numpy()
    Jf = F.jacobian(torch.as_tensor(x), mode="forward").numpy()
    assert Jf.shape == (2, 40, 2) and np.abs(Jr).max() > 0
    scale = np.abs(Jr).max(axis=1, keepdims=True)  # per row and parameter
    if which == "physics":  # float64 model: the two modes agree to 1e-10 relative
        np.testing.assert_allclose(Jf, Jr, rtol=1e-10, atol=1e-10 * scale.max())
        assert np.abs(Jf - Jr).max() <= 1e-10 * np.abs(Jr).max()
    else:  # float32 emulator: to float32 rounding accumulated over the rollout
        assert (np.abs(Jf - Jr) <= 1e-4 * scale).all(), np.abs(Jf - Jr).max(axis=1) / scale[:, 0]
    # the Problem (auto mode -> forward, d = 2 < m = 40) in the control space, as the posterior uses it
    problem = cal.Problem(F, F(x[0]), obs_std=1.0, prior=space)
    H = problem.jacobian(x[0], control=True)
    Hr = problem.jacobian(x[0], control=True, mode="reverse")
    tol = 1e-10 if which == "physics" else 1e-4
    assert np.abs(H - Hr).max() <= tol * np.abs(Hr).max()
    np.testing.assert_allclose(H, Jf[0] * x[0], rtol=tol, atol=tol * np.abs(Hr).max())  # dM/dlnx = x dM/dx


class _LeavesTorch(torch.autograd.Function):
    """a**2 with a backward computed in numpy: right first derivatives, but no graph."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a**2

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return torch.as_tensor(2 * a.detach().numpy() * g.detach().numpy())


def test_forward_mode_never_returns_wrong_numbers_for_a_backward_without_graph():
    def fn(x):
        return torch.stack([_LeavesTorch.apply(x[:, 0]) * torch.exp(x[:, 1]), x[:, 0] * x[:, 1], torch.sin(x[:, 0])], 1)

    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        J = cal.batched_jacobian(fn, x, mode="forward")
    assert any("forward mode failed" in str(w.message) and "dot-product" in str(w.message) for w in caught)
    Jr = cal.batched_jacobian(fn, x, mode="reverse")
    np.testing.assert_allclose(J.numpy(), Jr.numpy(), rtol=1e-14)
    a, b = x[:, 0], x[:, 1]
    np.testing.assert_allclose(J[:, 0, 0].numpy(), (2 * a * torch.exp(b)).numpy(), rtol=1e-14)
