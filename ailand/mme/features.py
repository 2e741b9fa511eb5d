"""Model inputs from an ensemble dataset: calendar features and batches of (valid time, lead day) samples."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import MMEData

__all__ = ["calendar_features"]


def calendar_features(times) -> np.ndarray:
    """``(T, 5)`` float32: sin/cos of the UTC hour of day, sin/cos of the day of year, weekend (0/1)."""
    t = pd.DatetimeIndex(times)
    h = 2 * np.pi * (t.hour.values + t.minute.values / 60.0) / 24.0
    d = 2 * np.pi * (t.dayofyear.values - 1) / 365.25
    return np.stack([np.sin(h), np.cos(h), np.sin(d), np.cos(d), (t.dayofweek.values >= 5).astype(float)], 1).astype(np.float32)


class _Batcher:
    """Gathers numpy batches for (time index, lead index) pairs from an :class:`MMEData`,
    with the model's member order (members the data lacks are NaN)."""

    def __init__(self, data: MMEData, variables, members, lead_index, predictors):
        self.x = [data.members_array(v) for v in variables]
        self.y = [data.analysis_array(v) for v in variables]
        self.p = [data.predictor_array(p) for p in predictors]
        self.cal = calendar_features(data.time)
        self.lead_index = np.asarray(lead_index)  # data lead position -> model lead position
        self.n_leads = int(max(lead_index)) + 1 if len(lead_index) else 0
        self.member_index = [data.members.index(m) if m in data.members else -1 for m in members]
        self.H, self.W = data.shape["lat"], data.shape["lon"]

    def members(self, t, li):
        """``(B, V, M, H, W)`` float32, NaN = missing."""
        B = len(t)
        out = np.full((B, len(self.x), len(self.member_index), self.H, self.W), np.nan, dtype=np.float32)
        for v, x in enumerate(self.x):
            for j, m in enumerate(self.member_index):
                if m >= 0:
                    out[:, v, j] = x[m, li, t]
        return out

    def calendar(self, t, li, n_leads):
        onehot = np.zeros((len(t), n_leads), np.float32)
        onehot[np.arange(len(t)), self.lead_index[li]] = 1.0
        return np.concatenate([self.cal[t], onehot], 1)

    def predictors(self, t, li):
        if not self.p:
            return None
        return np.stack([p[li, t] for p in self.p], 1)

    def target(self, t):
        return np.stack([y[t] for y in self.y], 1)
