"""Regular lat-lon grid geometry and a point observation operator.

:class:`LatLonGrid` holds what a finite-volume scheme on a regular latitude-longitude
grid needs: cell-centre coordinates, cell areas, face lengths. :class:`PointSampler` is
a bilinear (or nearest) interpolation from the grid to points, as a fixed sparse
weight matrix, so that it is linear, differentiable and batched over leading dims.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

EARTH_RADIUS = 6.371e6  # m


@dataclass(frozen=True)
class LatLonGrid:
    """A regular lat-lon grid of ``ny x nx`` cells.

    Attributes
    ----------
    lat : (ny,) cell-centre latitudes [degrees_north], increasing, evenly spaced.
    lon : (nx,) cell-centre longitudes [degrees_east], increasing, evenly spaced.
    """

    lat: np.ndarray
    lon: np.ndarray

    def __post_init__(self):
        lat = np.asarray(self.lat, dtype=np.float64)
        lon = np.asarray(self.lon, dtype=np.float64)
        for name, c in (("lat", lat), ("lon", lon)):
            if c.ndim != 1 or c.size < 2:
                raise ValueError(f"grid {name} must be a 1-d array of at least 2 cell centres, got shape {c.shape}")
            if not np.all(np.isfinite(c)):
                raise ValueError(f"grid {name} has NaN/inf values")
            d = np.diff(c)
            if not (np.all(d > 0) and np.allclose(d, d[0], rtol=1e-6, atol=1e-9)):
                raise ValueError(f"grid {name} must increase with a constant spacing (a regular grid)")
        if lat[0] - 0.5 * (lat[1] - lat[0]) < -90 or lat[-1] + 0.5 * (lat[1] - lat[0]) > 90:
            raise ValueError("grid cells must stay within -90..90 degrees of latitude")
        object.__setattr__(self, "lat", lat)
        object.__setattr__(self, "lon", lon)

    @classmethod
    def from_dataset(cls, ds: xr.Dataset | xr.DataArray) -> "LatLonGrid":
        """The grid of a Dataset/DataArray with ``lat`` and ``lon`` dimension coordinates."""
        for c in ("lat", "lon"):
            if c not in ds.dims:
                raise ValueError(f"expected a '{c}' dimension (dims: {dict(ds.sizes)})")
        return cls(ds["lat"].values, ds["lon"].values)

    # --------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, int]:
        return (self.lat.size, self.lon.size)

    @property
    def dlat(self) -> float:
        """Latitude spacing [degrees]."""
        return float(self.lat[1] - self.lat[0])

    @property
    def dlon(self) -> float:
        """Longitude spacing [degrees]."""
        return float(self.lon[1] - self.lon[0])

    @property
    def lat_edges(self) -> np.ndarray:
        """(ny + 1,) latitudes of the cell faces [degrees_north]."""
        return np.concatenate([self.lat - 0.5 * self.dlat, [self.lat[-1] + 0.5 * self.dlat]])

    @property
    def lon_edges(self) -> np.ndarray:
        """(nx + 1,) longitudes of the cell faces [degrees_east]."""
        return np.concatenate([self.lon - 0.5 * self.dlon, [self.lon[-1] + 0.5 * self.dlon]])

    @property
    def area(self) -> np.ndarray:
        """(ny, nx) cell areas on the sphere [m2]: R^2 dlon (sin phi_n - sin phi_s)."""
        e = np.deg2rad(self.lat_edges)
        band = EARTH_RADIUS**2 * np.deg2rad(self.dlon) * (np.sin(e[1:]) - np.sin(e[:-1]))
        return np.repeat(band[:, None], self.lon.size, axis=1)

    @property
    def dy(self) -> float:
        """Length of a west/east face (a meridian arc of one cell) [m]."""
        return EARTH_RADIUS * np.deg2rad(self.dlat)

    @property
    def dx_faces(self) -> np.ndarray:
        """(ny + 1,) length of the south/north faces (parallel arcs of one cell) [m]."""
        return EARTH_RADIUS * np.cos(np.deg2rad(self.lat_edges)) * np.deg2rad(self.dlon)

    def cell_area(self) -> xr.DataArray:
        """Cell areas as a labelled ``(lat, lon)`` DataArray [m2]."""
        return xr.DataArray(
            self.area, dims=("lat", "lon"), coords={"lat": self.lat, "lon": self.lon},
            attrs={"units": "m2", "long_name": "grid-cell area"}, name="cell_area",
        )

    def contains(self, lat, lon) -> np.ndarray:
        """Which points ``(lat, lon)`` [degrees] lie inside the grid's outer cell faces."""
        lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
        le, oe = self.lat_edges, self.lon_edges
        return np.isfinite(lat) & np.isfinite(lon) & (lat >= le[0]) & (lat <= le[-1]) & (lon >= oe[0]) & (lon <= oe[-1])

    def index(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """Indices ``(j, i)`` of the cells holding points ``(lat, lon)``; ValueError outside."""
        lat, lon = np.atleast_1d(np.asarray(lat, dtype=np.float64)), np.atleast_1d(np.asarray(lon, dtype=np.float64))
        self._check_inside(lat, lon)
        j = np.clip(np.floor((lat - self.lat_edges[0]) / self.dlat).astype(np.int64), 0, self.lat.size - 1)
        i = np.clip(np.floor((lon - self.lon_edges[0]) / self.dlon).astype(np.int64), 0, self.lon.size - 1)
        return j, i

    def _check_inside(self, lat, lon):
        if lat.shape != lon.shape:
            raise ValueError(f"lat and lon of the points must have the same shape, got {lat.shape} and {lon.shape}")
        out = ~self.contains(lat, lon)
        if out.any():
            k = np.flatnonzero(out)
            shown = ", ".join(f"#{n} ({lat[n]:.3g}N, {lon[n]:.3g}E)" for n in k[:5])
            le, oe = self.lat_edges, self.lon_edges
            raise ValueError(
                f"{k.size} point(s) lie outside the grid (lat {le[0]:g}..{le[-1]:g}, lon {oe[0]:g}..{oe[-1]:g}) "
                f"or are NaN: {shown}{' ...' if k.size > 5 else ''}; drop them or enlarge the region"
            )

    def __repr__(self):
        return (
            f"LatLonGrid({self.lat.size} x {self.lon.size} cells of {self.dlat:g} x {self.dlon:g} deg, "
            f"lat {self.lat_edges[0]:g}..{self.lat_edges[-1]:g}, lon {self.lon_edges[0]:g}..{self.lon_edges[-1]:g})"
        )


class PointSampler:
    """Linear observation operator: values of a gridded field at points.

    ``sampler(field)`` maps ``(..., ny, nx)`` to ``(..., n_points)`` (torch or numpy in, the
    same out). ``method="bilinear"`` interpolates between the four surrounding cell centres
    (constant beyond the outermost centres, up to the grid's outer faces); ``"nearest"``
    takes the holding cell. Each point keeps ``k`` (4 or 1) flat cell indices
    (:attr:`index`, ``(n_points, k)``) and weights (:attr:`weight`, rows sum to 1), so the
    operator is linear and differentiable; :meth:`matrix` gives it as a dense
    ``(n_points, ny * nx)`` array.

    Raises ValueError naming the points that lie outside the grid or are NaN.
    """

    def __init__(self, grid: LatLonGrid, lat, lon, method: str = "bilinear"):
        if method not in ("bilinear", "nearest"):
            raise ValueError(f"method must be 'bilinear' or 'nearest', not {method!r}")
        lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        if lat.ndim != 1:
            raise ValueError(f"point latitudes must be 1-d, got shape {lat.shape}")
        grid._check_inside(lat, lon)
        ny, nx = grid.shape
        if method == "nearest":
            j, i = grid.index(lat, lon)
            index, weight = (j * nx + i)[:, None], np.ones((lat.size, 1))
        else:
            fy = np.clip((lat - grid.lat[0]) / grid.dlat, 0.0, ny - 1.0)
            fx = np.clip((lon - grid.lon[0]) / grid.dlon, 0.0, nx - 1.0)
            j0 = np.minimum(np.floor(fy).astype(np.int64), ny - 2)
            i0 = np.minimum(np.floor(fx).astype(np.int64), nx - 2)
            ay, ax = fy - j0, fx - i0
            index = np.stack([j0 * nx + i0, j0 * nx + i0 + 1, (j0 + 1) * nx + i0, (j0 + 1) * nx + i0 + 1], axis=1)
            weight = np.stack([(1 - ay) * (1 - ax), (1 - ay) * ax, ay * (1 - ax), ay * ax], axis=1)
        self.grid, self.method = grid, method
        self.lat, self.lon = lat, lon
        self.index, self.weight = index, weight
        self._torch = {}

    def __len__(self):
        return self.lat.size

    def matrix(self) -> np.ndarray:
        """The operator as a dense ``(n_points, ny * nx)`` array."""
        m = np.zeros((len(self), self.grid.shape[0] * self.grid.shape[1]))
        np.add.at(m, (np.repeat(np.arange(len(self)), self.index.shape[1]), self.index.ravel()), self.weight.ravel())
        return m

    def __call__(self, field):
        """``field`` (..., ny, nx) -> (..., n_points)."""
        ny, nx = self.grid.shape
        if tuple(field.shape[-2:]) != (ny, nx):
            raise ValueError(f"field must end with the grid shape {(ny, nx)}, got {tuple(field.shape)}")
        flat = field.reshape(*field.shape[:-2], ny * nx)
        if torch.is_tensor(field):
            key = (field.dtype, field.device)
            if key not in self._torch:
                self._torch[key] = (
                    torch.as_tensor(self.index, device=field.device),
                    torch.as_tensor(self.weight, dtype=field.dtype, device=field.device),
                )
            idx, w = self._torch[key]
            return (flat[..., idx] * w).sum(-1)
        return (np.asarray(flat)[..., self.index] * self.weight).sum(-1)
