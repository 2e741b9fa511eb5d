"""The shipped default emulator (data/emulator/default.pt) against the physics it emulates."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ailand
from ailand.emulator import Emulator
from ailand.emulator.jacobian import compare_sensitivities


@pytest.fixture(scope="module")
def default_emulator():
    return Emulator.default()


def test_default_emulator_loads_with_its_training_record(default_emulator):
    em = default_emulator
    assert em.dt == 21600.0 and len(em.input_names) == 56 and len(em.output_names) == 34
    tr = em.meta["training"]
    assert tr["val_sites"] == ["BE-Lon", "US-Kon"]
    assert "BE-Lon" not in tr["train_sites"] and "US-Kon" not in tr["train_sites"]
    assert not any(s.startswith(("BE-Lon~", "US-Kon~")) for s in tr["train_sites"])  # no leak via synthetic copies


def test_parameter_sensitivities_agree_in_sign_with_the_physics(default_emulator):
    """d mean(June Qle, swvl1) / d parameter by autograd through a 2-month rollout, at every
    default site: the emulator's signs agree with the physics' exact ones for >= 90% of the
    (site, parameter, output) entries where the physics sensitivity is not negligible
    (>= 5% of the largest at that site and output, scaled by each parameter's range)."""
    warnings.simplefilter("ignore", UserWarning)
    torch.manual_seed(0)
    forcing = ailand.synthetic_forcing("all", "2020-05-01", "2020-06-30", seed=11)
    physics = ailand.ToyEcLand(compile=False)
    state0 = ailand.ToyEcLand().initial_conditions(forcing, spinup_years=1)
    cmp = compare_sensitivities(
        default_emulator, physics, forcing, outputs=["Qle", "swvl1"], period=slice("2020-06-01", "2020-06-30"), state0=state0
    )
    assert cmp.attrs["n_significant"] >= 50
    assert cmp.attrs["sign_agreement"] >= 0.9, cmp.attrs
    assert np.isfinite(cmp["emulator"].values).all()
