"""Inference: turn observations into parameters or states (Problem, variational, MCMC, history matching...)."""
