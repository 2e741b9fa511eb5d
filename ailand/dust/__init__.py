"""Desert dust on the toy ecLand: a gridded dust world, an emission scheme, a toy aerosol model.

The chain (each step usable alone)::

    world = make_world("2020-07-01", "2020-07-10", seed=0)    # (time, lat, lon) forcing + statics
    land = run_land(world)                                   # ToyEcLand on the land cells (time, site)
    prior = DustEmission().run(world, land)                  # Kok et al. 2014 emission (time, lat, lon)
    chain = DustChain(world, land)                           # land + prior emission, cached
    res = chain.run(scale, period=chain.period_index(3.0))   # aerosol transport for (M, P, ny, nx) factors
    ds = chain.to_dataset(res)                               # labelled AOD, load, budget
    # or all at once: run_chain(world, scale, period_days=3.0)

Modules: :mod:`~ailand.dust.world` (grid, statics, weather, columns <-> grid),
:mod:`~ailand.dust.geography` (the toy map), :mod:`~ailand.dust.emission` (equations and
scheme), :mod:`~ailand.dust.aerosol` (transport, deposition, AOD, budget),
:mod:`~ailand.dust.grid` (grid geometry, point observation operator),
:mod:`~ailand.dust.chain` (land run and the whole chain).
"""

from .aerosol import AerosolModel, AerosolResult, Meteo, as_scale, period_index
from .chain import LAND_OUTPUTS, DustChain, climatological_state, run_chain, run_land
from .emission import DustEmission, dust_emission, dust_parameter_space, total_emission
from .grid import LatLonGrid, PointSampler
from .world import DEFAULT_REGION, land_index, make_statics, make_world, to_grid, validate_world, world_columns, world_grid

__all__ = [
    "make_world", "make_statics", "world_grid", "world_columns", "to_grid", "validate_world", "land_index",
    "DEFAULT_REGION", "LatLonGrid", "PointSampler", "DustEmission", "dust_emission", "dust_parameter_space",
    "total_emission", "AerosolModel", "AerosolResult", "Meteo", "as_scale", "period_index", "run_land",
    "climatological_state", "DustChain", "run_chain", "LAND_OUTPUTS",
]
