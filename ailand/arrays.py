"""One conversion for everything a user or a forward model hands over as an array.

A forward ``(n, d) -> (n, m)`` may return a numpy array, a torch tensor (on any device,
with or without grad, any float dtype incl. bfloat16), an xarray DataArray, a pandas
object or a nested list. :func:`to_numpy` turns any of these into a numpy array; the
inference packages (``calibration``, ``sensitivity``) read forward outputs through it, so
they all accept the same things.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["to_numpy", "is_tensor"]


def is_tensor(a) -> bool:
    """True for a ``torch.Tensor`` (without importing torch when nobody has)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def to_numpy(a, dtype=float, name: str = "array") -> np.ndarray:
    """numpy / torch / DataArray / pandas / list -> numpy array of ``dtype``.

    Parameters
    ----------
    a : the array-like. A torch tensor is detached and moved to the CPU (bfloat16 and
        other dtypes numpy lacks go through float32); an object with ``to_numpy()``
        (xarray DataArray, pandas Series/DataFrame/Index) gives its values; a list or
        tuple of tensors is converted element by element.
    dtype : numpy dtype of the result (default ``float``, i.e. float64); ``None`` keeps
        the input's dtype.
    name : what to call ``a`` in error messages.

    Returns
    -------
    ``np.ndarray`` (may share memory with ``a``; copy before writing into it).
    """
    if is_tensor(a):
        t = a.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.is_conj():
            t = t.resolve_conj()
        if t.is_neg():
            t = t.resolve_neg()
        try:
            a = t.numpy()
        except TypeError:  # bfloat16, float8, ...: numpy has no such dtype
            a = t.float().numpy()
    elif isinstance(a, (list, tuple)) and any(is_tensor(v) for v in a):
        a = [to_numpy(v, dtype=dtype, name=name) for v in a]
    elif not isinstance(a, np.ndarray) and callable(getattr(a, "to_numpy", None)):
        a = a.to_numpy()
    try:
        return np.asarray(a, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} ({type(a).__name__}) cannot be read as a {np.dtype(dtype).name if dtype is not None else 'numeric'} "
                         f"array: {e}. Return a numpy array, torch tensor or xarray DataArray") from None
