"""The shallow-water testbed (issue 19): conservation to rounding, a lake at rest stays at rest,
the PDE residual, seeds, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ailand.shallow_water import ShallowWater1D, ShallowWater2D, residual, residual_1d, total_mass

pytestmark = pytest.mark.usefixtures("one_thread")


def test_2d_mass_and_momentum_conserved_to_rounding():
    sw = ShallowWater2D(16, 16, f=0.0)
    s = sw.random_state(3, seed=1, spinup_steps=0)
    traj = sw.run(s, 300, every=30)
    m = total_mass(traj, sw.dx, sw.dy)
    # flux form on a periodic grid: 300 Heun steps change the total mass only by float64 rounding
    assert float(((m - m[0]) / m[0]).abs().max()) < 1e-13
    # without rotation the total momentum is conserved too (it starts at 0)
    hu = (traj[:, :, 0] * traj[:, :, 1]).sum((-1, -2))
    assert float(hu.abs().max()) < 1e-12 * float(traj[:, :, 0].sum((-1, -2)).max())
    # ... and the flow is not trivial: the bumps have spread into waves
    assert float(traj[-1, :, 1].abs().max()) > 1e-2


def test_2d_rotation_keeps_mass_and_1d_conserves():
    sw = ShallowWater2D(16, 16, f=1e-4)
    traj = sw.run(sw.random_state(2, seed=2, spinup_steps=0), 200, every=200)
    m = total_mass(traj, sw.dx, sw.dy)
    assert float(((m - m[0]) / m[0]).abs().max()) < 1e-13
    sw1 = ShallowWater1D(48)
    tr = sw1.run(sw1.random_state(4, seed=0), 400, every=100)
    m1 = total_mass(tr, sw1.dx)
    assert float(((m1 - m1[0]) / m1[0]).abs().max()) < 1e-13


def test_lake_at_rest_and_residual():
    sw = ShallowWater2D(8, 8)
    rest = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    rest[:, 0] = sw.h0
    assert torch.equal(sw.run(rest, 10)[-1], rest)  # exactly steady
    assert float(residual(rest, rest, sw.dt, sw.dx, f=sw.f).abs().max()) == 0.0
    # the residual of the model's own steps is a small fraction of the tendency (truncation error)
    sw1 = ShallowWater1D(64)
    tr = sw1.run(sw1.random_state(4, seed=3), 20)
    r = residual_1d(tr[:-1], tr[1:], sw1.dt, sw1.dx)
    tend = torch.stack([tr[1:, :, 0] - tr[:-1, :, 0], tr[1:, :, 0] * tr[1:, :, 1] - tr[:-1, :, 0] * tr[:-1, :, 1]], 2)
    rel = r.pow(2).mean((0, 1, 3)).sqrt() / (tend / sw1.dt).pow(2).mean((0, 1, 3)).sqrt()
    assert float(rel.max()) < 0.1


def test_seeded_and_errors():
    sw = ShallowWater2D(8, 8)
    assert torch.equal(sw.random_state(2, seed=5), sw.random_state(2, seed=5))
    assert not torch.equal(sw.random_state(2, seed=5), sw.random_state(2, seed=6))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 8, 8\)"):
        sw.run(torch.ones(1, 3, 8, 9, dtype=torch.float64), 1)
    bad = sw.random_state(1, seed=0)
    bad[0, 0, 0, 0] = -1.0
    with pytest.raises(ValueError, match="depth h must be > 0"):
        sw.run(bad, 1)
    fast = sw.random_state(1, seed=0)
    fast[:, 1] = 100.0
    with pytest.raises(ValueError, match="CFL"):
        sw.run(fast, 1)
    with pytest.raises(ValueError, match="at least 4 x 4"):
        ShallowWater2D(2, 8)
    assert np.isfinite(sw.dt) and sw.dt > 0
