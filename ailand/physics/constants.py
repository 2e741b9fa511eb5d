"""Physical constants and fixed numerical choices of the toy ecLand (SI units)."""

TT = 273.16  # triple point / melting temperature [K] (ecLand RTT)
RTF1 = 274.16  # upper end of the soil freezing range [K] (ecLand)
RTF2 = 272.16  # lower end of the soil freezing range [K] (ecLand)
LV = 2.5008e6  # latent heat of vaporisation [J kg-1]
LF = 3.3355e5  # latent heat of fusion [J kg-1]
LS = LV + LF  # latent heat of sublimation [J kg-1]
CP_AIR = 1004.7  # specific heat of dry air [J kg-1 K-1]
RD = 287.06  # gas constant of dry air [J kg-1 K-1]
SIGMA = 5.67037e-8  # Stefan-Boltzmann [W m-2 K-4]
GRAV = 9.80665  # [m s-2]
KARMAN = 0.4
RHO_W = 1000.0  # density of liquid water [kg m-3]
C_ICE = 2106.0  # specific heat of ice [J kg-1 K-1]
C_W = 4188.0  # specific heat of water [J kg-1 K-1]
C_W_VOL = RHO_W * C_W  # volumetric heat capacity of water [J m-3 K-1]
C_SOLID = 2.19e6  # volumetric heat capacity of soil minerals [J m-3 K-1] (ecLand RRHOCS)
EMISSIVITY = 0.97  # surface emissivity [-]

# Soil column: four ecLand layers, thickness [m] and depth of layer bottoms [cm]
DZ = (0.07, 0.21, 0.72, 1.89)
Z_BOTTOM_CM = (7.0, 28.0, 100.0, 289.0)

ZREF = 10.0  # height of the forcing (wind, temperature, humidity) [m]
Z_SCREEN = 2.0  # height of the screen-level diagnostics T2m, q2m, RH2m [m]
Z0_BARE = 0.005  # roughness length of bare soil [m]
Z0_SNOW = 0.001  # roughness length of snow [m]
Z0H_RATIO = 0.1  # z0h = Z0H_RATIO * z0m
WIND_MIN = 1.0  # wind speed floor in the bulk transfer: sqrt(u^2 + v^2 + WIND_MIN^2) [m s-1]
RI_LIMIT = 1.0  # |bulk Richardson number| cap used in the stability function
LAI_MIN = 0.05  # floor of the effective LAI in the canopy resistance [m2 m-2]

# Jarvis canopy resistance (ecLand): 1/f1 = min(1, (b*Rs + c) / (a*(b*Rs + 1))), f3 = exp(gD * D[hPa])
JARVIS_A, JARVIS_B, JARVIS_C = 0.81, 0.004, 0.05
JARVIS_GD = 0.03  # [hPa-1]

# Snow
SNOW_COVER_SWE = 15.0  # SWE [kg m-2] at which the snow cover fraction reaches 1 (ecLand-like)
SNOW_FRESH_RESET = 10.0  # new snow [kg m-2] that resets the albedo fully to RALFMAXSN
RHO_SNOW_FLOOR = 50.0  # floor of the fresh snow density [kg m-3] (ecLand RHOMINSND)
RHO_SNOW_MAX_COLD = 300.0  # density that cold snow compacts towards [kg m-3]
RHO_SNOW_MAX_MELT = 450.0  # density that melting snow compacts towards [kg m-3]
TAU_COMPACT = 0.24  # compaction e-folding rate [d-1] (ecLand tau_f)
SNOW_C_MIN = 0.01 * C_ICE  # heat capacity floor of the snow pack [J m-2 K-1] (keeps an empty pack defined)

# Soil hydrology
ARNO_B = 0.3  # ARNO shape: saturated fraction = 1 - (1 - s)^(b/(1+b)) of the top 28 cm
FROZEN_K_FACTOR = 0.9  # fraction of conductivity and infiltration lost when soil is fully frozen
THETA_FLOOR = 1e-4  # volumetric water content floor kept by the conservative deficit pass [m3 m-3]

SECONDS_PER_DAY = 86400.0
