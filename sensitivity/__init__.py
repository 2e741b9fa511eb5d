"""Sensitivity screening (Morris, Sobol) on labelled, vector-valued outputs."""
