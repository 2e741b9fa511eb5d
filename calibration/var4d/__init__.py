"""Strong-constraint 4D-Var over any step function on torch tensors, with tangent-linear and
adjoint models by autograd (the model's own, or a machine-learnt emulator's), their standard
checks, and cycling (:mod:`calibration.var4d.core`); the Lorenz-96 twin
(:mod:`calibration.var4d.lorenz96_twin`)."""

from .core import (AdjointTest, Covariance, TaylorTest, Var4D, Var4DResult, adjoint, adjoint_test, cycle, plot,
                   tangent_linear, tangent_linear_test)

__all__ = ["Var4D", "Var4DResult", "cycle", "plot", "Covariance", "tangent_linear", "adjoint",
           "tangent_linear_test", "adjoint_test", "TaylorTest", "AdjointTest"]
