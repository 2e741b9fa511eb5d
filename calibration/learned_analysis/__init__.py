"""Learned analyses (issue 19): classical teachers (OI / 3D-Var with a fitted background-error
correlation, the LETKF) and learned ones (U-Nets for the two toy exercises, a conditional
denoising-diffusion ensemble, a physics-constrained shallow-water network), with their scores.

Modules: :mod:`.observations` (gridded observations, validation), :mod:`.classical` (correlations,
length-scale fit, OI / 3D-Var, LETKF), :mod:`.cases` (shallow-water exercise cases), :mod:`.land`
(T2m / soil moisture of the gridded world with a forecast ensemble and daily stations),
:mod:`.networks` (U-Net analyses, the 1-D physics-constrained net), :mod:`.diffusion` (the
conditional DDPM ensemble), :mod:`.train`, :mod:`.experiments` (end-to-end runs and scores, used by
the benchmark, the example and the CLI), :mod:`.cli` (``ailand analyse``).
"""
