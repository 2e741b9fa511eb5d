"""Jacobians and parameter sensitivities from the aiLand emulator, checked against the physics.

Uses the pretrained default emulator shipped in data/emulator/default.pt (no training,
no download) and writes to runs/jacobians/:

    step_jacobian.nc / .png   d(outputs)/d(inputs) of one 6-h step at FI-Hyy in spring
    sensitivities.nc / .png   d mean(June Qle) / d each parameter over a 2-month rollout,
                              emulator (autograd through 244 steps) vs physics (exact autograd)
    emulator.onnx             the step for ECMWF's infero (one input, one output node)

Run:  .venv/bin/python examples/emulator_jacobians.py      (about 1-2 minutes on 2 cores)
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import ailand  # noqa: E402
from ailand.emulator import Emulator  # noqa: E402
from ailand.emulator.jacobian import compare_sensitivities, plot_jacobian, step_inputs  # noqa: E402
from ailand.emulator.onnx_export import OnnxEmulatorStep  # noqa: E402

OUT = Path("runs/jacobians")
OUT.mkdir(parents=True, exist_ok=True)

em = Emulator.default()  # MLP 4 x 256, 6-h step, trained on the default ensemble
print(em)

# 1. One-step Jacobian at FI-Hyy during snow melt: input rows (state from an emulator
#    rollout, the step's forcing, clim fields, time, parameters), then torch.func.
forcing = ailand.synthetic_forcing(["FI-Hyy"], "2020-03-15", "2020-04-30", seed=0)
x = step_inputs(em, forcing, times=["2020-04-15T06:00", "2020-04-15T12:00"])  # (sample, input)
J = em.jacobian(x)  # DataArray (sample, output, input), physical units
J.to_netcdf(OUT / "step_jacobian.nc")
print("d snowc / d Tair  [K-1]:", J.sel(output="snowc", input="Tair").values)
print("d Qle / d SWdown  [-]:  ", J.sel(output="Qle", input="SWdown").values)
plot_jacobian(J, OUT / "step_jacobian.png", sample=0)

# 2. Parameter sensitivities of a whole rollout, emulator vs physics, at all default
#    sites; both start from the physics' spun-up state of 1 May.
forcing = ailand.synthetic_forcing("all", "2020-05-01", "2020-06-30", seed=11)
state0 = ailand.ToyEcLand().initial_conditions(forcing, spinup_years=1)
cmp = compare_sensitivities(
    em, ailand.ToyEcLand(compile=False), forcing, outputs="Qle", period=slice("2020-06-01", "2020-06-30"), state0=state0
)
cmp.to_netcdf(OUT / "sensitivities.nc")
print(f"sign agreement where the physics sensitivity matters: {cmp.attrs['sign_agreement']:.2f} "
      f"({cmp.attrs['n_significant']} entries), median relative error {cmp.attrs['median_rel_error']:.2f}")

fig, ax = plt.subplots(figsize=(4.5, 4.5))
sig = cmp["significant"]
ax.scatter(cmp["physics"].where(sig), cmp["emulator"].where(sig), s=12, label="not negligible")
ax.scatter(cmp["physics"].where(~sig), cmp["emulator"].where(~sig), s=6, c="0.7", label="negligible")
lim = float(abs(cmp["physics"]).max()) * 1.1
ax.plot([-lim, lim], [-lim, lim], "k", lw=0.6)
ax.set_xlabel("physics: change of June Qle over the parameter range [W m-2]")
ax.set_ylabel("emulator [W m-2]")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUT / "sensitivities.png", dpi=110)

# 3. ONNX: one input [batch, 56] in physical units, one output [batch, 31].
em.to_onnx(OUT / "emulator.onnx")
step = OnnxEmulatorStep(OUT / "emulator.onnx")
y = step(x.values.astype("float32"))
print(f"ONNX outputs {y.shape}; names from the model metadata: {step.output_names[:4]} ...")
print(f"wrote {OUT}/")
