"""Learned analyses (issue 19): classical teachers (OI / 3D-Var with a fitted background-error
correlation, the LETKF) and learned ones (U-Nets for the two toy exercises, a conditional
denoising-diffusion ensemble, a physics-constrained shallow-water network), with their scores.

Modules: :mod:`.observations` (gridded observations, validation), :mod:`.classical` (correlations,
length-scale fit, OI, LETKF), :mod:`.cases` (the testbeds' training/held-out cases),
:mod:`.networks` (U-Net analyses, the 1-D physics-constrained net), :mod:`.diffusion`,
:mod:`.train`, :mod:`.scores`, :mod:`.cli` (``ailand analyse``).
"""
