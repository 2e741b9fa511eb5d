"""What every calibration result shares."""

from __future__ import annotations

from pathlib import Path


class SavesNetCDF:
    """Mixin for results with ``to_xarray()``: ``to_netcdf(path)`` creates the folder and writes it."""

    def to_netcdf(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_xarray().to_netcdf(path)
        return path
