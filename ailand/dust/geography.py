"""Toy geography of the default dust region (North Africa - Middle East - Europe).

Coarse hand-drawn shapes in (lon, lat) degrees, good to about a degree: the seas that cut
the box (:data:`SEAS`), islands inside them (:data:`ISLANDS`), mountain ranges and basins
(:data:`RELIEF`), cities (:data:`CITIES`, non-source urban areas) and the preferential
dust sources named in the literature (:data:`HOTSPOTS`, e.g. the Bodele depression).
:mod:`ailand.dust.world` turns them into gridded static fields; nothing here is random.

All shapes are plain data; a user can pass their own to :func:`ailand.dust.make_statics`.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------
# seas (polygons of water, lon/lat vertices; the box edges are crossed generously)
# ---------------------------------------------------------------------------------------

SEAS: dict[str, list[tuple[float, float]]] = {
    "Atlantic and North Sea": [
        (-30, 0), (-7.5, 0), (-7.5, 4.4), (-9, 5), (-11, 6.5), (-13, 8.5), (-15, 11), (-16.8, 13),
        (-17.5, 14.7), (-16.5, 16.5), (-16.2, 19.5), (-17, 21), (-15.5, 24), (-13, 27.5), (-10, 29.8),
        (-9.8, 32), (-8.5, 33.3), (-6.8, 34.1), (-6, 35.8), (-6.3, 36.6), (-7.5, 37.1), (-9, 37),
        (-8.8, 38.5), (-9.5, 39), (-8.8, 41.5), (-9.3, 43), (-8, 43.7), (-4, 43.5), (-1.8, 43.4),
        (-1.2, 44.8), (-1.3, 46.3), (-2.3, 47.2), (-4.7, 47.9), (-4.5, 48.6), (-1.6, 48.7), (-1.3, 49.7),
        (0.2, 49.5), (1.5, 50.2), (2.5, 51.1), (3.6, 51.5), (4.2, 52.2), (4.7, 53.0), (6, 53.5),
        (8.5, 53.7), (8.5, 55.5), (8.1, 56.9), (10.6, 57.7), (11.5, 58.0), (11.2, 59.0), (10.5, 59.3),
        (8, 58.1), (6, 58.2), (5.3, 59.3), (5, 61), (5.2, 62.3), (7.5, 63.3), (10.5, 64.5),
        (12.5, 66), (13, 70), (-30, 70),
    ],
    "Baltic": [
        (12.5, 56.0), (12.8, 55.4), (14.3, 55.4), (16, 56.2), (16.6, 57.5), (16.5, 58.6), (18.2, 59.4),
        (17.3, 60.7), (17.7, 62.3), (19.5, 63.5), (21.3, 64.5), (22.2, 65.7), (25.4, 65.2), (25.3, 64.8),
        (22.5, 63.6), (21.2, 62.5), (21.5, 60.7), (22.9, 59.9), (25, 60.3), (29.5, 60.2), (28, 59.5),
        (23.5, 59.2), (23.5, 58.5), (24.4, 57.3), (24, 57), (21.5, 57.4), (21, 56), (21.2, 55.3),
        (19.6, 54.5), (18.5, 54.8), (16, 54.3), (14.3, 53.8), (12.5, 54.2), (11, 54), (10, 54.5),
        (10.8, 55.8),
    ],
    "Mediterranean": [
        (-5.6, 36.0), (-2, 35.2), (3, 36.8), (10, 37.3), (11, 35), (10.5, 34), (11.5, 33), (15, 32.4),
        (20, 30.5), (20, 32), (23, 32.7), (25, 31.7), (29, 30.9), (32, 31.2), (34.2, 31.3), (35, 32.5),
        (36, 34.5), (36, 36.5), (32, 36.2), (30, 36.3), (28, 36.8), (27, 38.5), (27, 40), (26, 40.8),
        (23.5, 40.5), (22.5, 40), (23, 38), (23, 36.5), (21.5, 36.8), (21, 38.5), (19.5, 40), (19.5, 42),
        (17, 43), (13.5, 45.5), (12.3, 45), (12.5, 44), (14, 42.5), (16, 41.5), (18.5, 40.2), (17, 39),
        (16.5, 38), (15.6, 38), (16, 39.5), (15.5, 40), (14, 40.8), (12.5, 41.5), (10.5, 43), (8.5, 44.3),
        (6, 43), (3, 43.3), (3, 42), (0.5, 40.5), (0, 39), (-0.5, 38), (-2, 36.7),
    ],
    "Black Sea": [
        (28, 41.2), (28, 43.5), (29.5, 45.2), (31, 46.6), (33.5, 46), (33, 44.5), (35, 44.8), (36.5, 45.3),
        (38, 47), (39.5, 47), (38, 45), (37.5, 44.5), (40, 43.5), (41.5, 41.5), (38, 40.9), (35, 42),
        (33, 42), (31, 41.1),
    ],
    "Caspian": [
        (47, 46.5), (49.5, 46.6), (53, 46.8), (51, 45.5), (51, 44), (52.8, 42), (53, 40), (53.8, 38),
        (53.9, 37), (51, 36.6), (49, 37.5), (49.2, 40.5), (48, 42), (47.3, 43), (46.8, 44.7), (47.5, 45.7),
    ],
    "Red Sea": [
        (32.5, 29.9), (33.5, 28), (35, 24), (37.5, 19), (39.5, 15.5), (43.3, 12.6), (43.5, 12.8),
        (42.6, 15), (39, 21.5), (38, 24), (35, 28), (34.8, 29.5), (34.5, 28), (33, 29.9),
    ],
    "Persian Gulf": [
        (56.3, 26.3), (54, 24.2), (51.5, 24.3), (50.7, 25.7), (50, 26.7), (48.4, 28.5), (48, 30), (49, 30.5),
        (50.5, 29.7), (51.5, 27.9), (54, 26.7), (56.3, 26.5),
    ],
    "Arabian Sea": [
        (43.4, 12.7), (45, 13), (49, 14.5), (52, 16), (55, 17), (57, 18.8), (58.7, 20.5), (59.8, 22.5),
        (58.8, 23.6), (57, 24), (56.3, 24.9), (56.3, 26.4), (57, 25.6), (61, 25.2), (66, 25.3), (70, 25.3),
        (70, 0), (48, 0), (48, 5), (51, 10), (51, 11.8), (45, 10.5),
    ],
}

ISLANDS: dict[str, list[tuple[float, float]]] = {
    "Britain and Ireland": [
        (-10.3, 51.6), (-10.2, 53.5), (-8.6, 55.3), (-6.2, 55.3), (-5.6, 56.5), (-6.3, 58.3), (-5, 58.6),
        (-3, 58.7), (-1.8, 57.6), (-2.1, 56.2), (-1.6, 55.6), (-0.2, 54.1), (0.1, 53.5), (1.7, 52.7),
        (1.4, 51.3), (0.5, 50.8), (-3, 50.6), (-5.7, 50.1), (-6, 52),
    ],
    "Iceland": [(-22.5, 63.8), (-24, 64.8), (-22, 66.4), (-16, 66.5), (-13.5, 65.2), (-15, 64.3), (-18, 63.4)],
}

# ---------------------------------------------------------------------------------------
# relief: elongated Gaussians (lat, lon, height [m], sigma along, sigma across [deg], angle
# of the long axis [deg, counter-clockwise from east]); negative heights are basins
# ---------------------------------------------------------------------------------------

RELIEF: dict[str, tuple[float, float, float, float, float, float]] = {
    "Alps": (46.3, 10.0, 2300.0, 3.0, 0.9, 10.0),
    "Pyrenees": (42.7, 0.5, 1600.0, 2.5, 0.6, 0.0),
    "Iberian Meseta": (40.0, -4.0, 600.0, 3.0, 2.5, 0.0),
    "Atlas": (31.8, -4.0, 2000.0, 5.0, 1.2, 25.0),
    "Ahaggar": (23.5, 5.5, 1400.0, 2.0, 2.0, 0.0),
    "Tibesti": (21.0, 18.0, 1800.0, 1.6, 1.4, 0.0),
    "Air": (18.0, 8.5, 900.0, 1.6, 1.0, 90.0),
    "Ennedi": (17.0, 22.5, 800.0, 1.0, 1.0, 0.0),
    "Marra": (13.0, 24.0, 1200.0, 1.2, 1.0, 90.0),
    "Ethiopian Highlands": (10.0, 39.0, 2200.0, 3.5, 2.5, 60.0),
    "Hejaz-Asir": (21.0, 41.0, 1000.0, 5.0, 1.2, 65.0),
    "Yemen Highlands": (15.0, 44.0, 2000.0, 2.0, 1.2, 0.0),
    "Zagros": (32.0, 50.0, 2000.0, 7.0, 1.5, -40.0),
    "Iranian Plateau": (33.0, 57.0, 1200.0, 5.0, 4.0, 0.0),
    "Elburz-Kopet Dag": (36.8, 55.0, 1800.0, 6.0, 0.8, 10.0),
    "Hindu Kush": (35.5, 67.0, 2800.0, 4.0, 2.0, 20.0),
    "Anatolia": (39.0, 35.0, 1200.0, 6.0, 2.0, 0.0),
    "Caucasus": (42.8, 44.0, 2500.0, 4.0, 0.7, -20.0),
    "Carpathians": (47.5, 24.0, 900.0, 3.0, 1.0, 60.0),
    "Balkans": (42.5, 21.0, 1100.0, 3.0, 2.0, -40.0),
    "Apennines": (42.5, 13.0, 1000.0, 3.5, 0.7, -50.0),
    "Scandinavian Mountains": (62.0, 9.0, 1200.0, 4.0, 1.5, 60.0),
    "Arabian Plateau": (25.0, 44.0, 600.0, 7.0, 5.0, 0.0),
    "Bodele depression": (16.8, 17.8, -220.0, 1.5, 1.5, 0.0),
    "Qattara depression": (29.5, 27.0, -300.0, 1.0, 1.0, 0.0),
    "Caspian lowland": (46.0, 50.0, -150.0, 3.0, 3.0, 0.0),
    "Mesopotamia": (32.5, 45.0, -300.0, 4.0, 1.5, -40.0),
    "Chott el Djerid": (33.7, 8.0, -250.0, 1.0, 1.0, 0.0),
    "Taoudeni basin": (21.0, -5.0, -150.0, 3.0, 3.0, 0.0),
    "Lake Chad basin": (13.5, 14.0, -150.0, 2.0, 2.0, 0.0),
    "Turan lowland": (41.0, 60.0, -200.0, 5.0, 3.0, 0.0),
}

# cities: (lat, lon, urban fraction of the 1.5-degree cell that holds them) - never dust sources
CITIES: dict[str, tuple[float, float, float]] = {
    "Berlin": (52.52, 13.40, 0.35), "Paris": (48.86, 2.35, 0.45), "London": (51.51, -0.13, 0.45),
    "Madrid": (40.42, -3.70, 0.3), "Rome": (41.90, 12.50, 0.3), "Milan": (45.46, 9.19, 0.35),
    "Vienna": (48.21, 16.37, 0.25), "Warsaw": (52.23, 21.01, 0.25), "Moscow": (55.76, 37.62, 0.45),
    "Istanbul": (41.01, 28.98, 0.4), "Athens": (37.98, 23.73, 0.3), "Cairo": (30.04, 31.24, 0.45),
    "Baghdad": (33.32, 44.36, 0.3), "Tehran": (35.69, 51.39, 0.4), "Riyadh": (24.71, 46.68, 0.3),
    "Khartoum": (15.50, 32.56, 0.25), "Lagos": (6.52, 3.38, 0.4), "Algiers": (36.75, 3.06, 0.25),
    "Casablanca": (33.57, -7.59, 0.25), "Dakar": (14.72, -17.47, 0.25), "Kano": (12.00, 8.52, 0.2),
    "Ruhr": (51.45, 7.0, 0.35), "Kyiv": (50.45, 30.52, 0.25), "Dubai": (25.20, 55.27, 0.3),
}

# preferential dust sources: (lat, lon, radius [deg], strength in [0, 1])
HOTSPOTS: dict[str, tuple[float, float, float, float]] = {
    "Bodele": (17.0, 18.0, 1.6, 1.0),
    "El Djouf / Mali-Mauritania": (20.0, -6.0, 3.0, 0.8),
    "Western Sahara coast": (24.5, -12.5, 2.0, 0.6),
    "Algeria-Libya ergs": (28.0, 7.0, 3.0, 0.6),
    "Great Sand Sea / Libya-Egypt": (26.0, 25.0, 3.0, 0.7),
    "Sudan-Chad": (18.0, 27.0, 2.5, 0.6),
    "Mesopotamia": (33.0, 44.5, 2.0, 0.8),
    "Rub al Khali": (20.5, 50.0, 3.0, 0.6),
    "Sistan": (31.0, 61.5, 1.5, 0.8),
    "Karakum": (39.0, 60.0, 3.0, 0.6),
}


def points_in_polygon(lon: np.ndarray, lat: np.ndarray, polygon) -> np.ndarray:
    """Even-odd rule: which points ``(lon, lat)`` (any equal shapes) lie inside ``polygon``.

    polygon : sequence of ``(lon, lat)`` vertices (closed implicitly). Returns a bool array
    of the points' shape.
    """
    px, py = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    v = np.asarray(polygon, dtype=np.float64)
    xi, yi = v[:, 0], v[:, 1]
    xj, yj = np.roll(xi, 1), np.roll(yi, 1)
    inside = np.zeros(px.shape, dtype=bool)
    for a, b, c, d in zip(xi, yi, xj, yj):
        if b == d:
            continue
        crosses = (b > py) != (d > py)
        x_cross = (c - a) * (py - b) / (d - b) + a
        inside ^= crosses & (px < x_cross)
    return inside


def relief(lat: np.ndarray, lon: np.ndarray, shapes=None) -> np.ndarray:
    """Large-scale relief [m] (no noise, no base level) at points ``(lat, lon)``: sum of the
    elongated Gaussians of ``shapes`` (default :data:`RELIEF`)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    h = np.zeros(np.broadcast(lat, lon).shape)
    for la, lo, height, s_along, s_across, angle in (shapes or RELIEF).values():
        a = np.deg2rad(angle)
        dx = (lon - lo) * np.cos(np.deg2rad(la))
        dy = lat - la
        x = dx * np.cos(a) + dy * np.sin(a)
        y = -dx * np.sin(a) + dy * np.cos(a)
        h = h + height * np.exp(-0.5 * ((x / s_along) ** 2 + (y / s_across) ** 2))
    return h
