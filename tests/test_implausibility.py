"""Implausibility (formula, nth-max, tolerance) and the NROY samplers on known regions.

Hand-made case (2 candidates x 3 outputs), computed by hand:

    z = [0, 10, 5], var_obs = [1, 4, 0.25], var_mod = [0, 5, 0.75]
    x1: mean [3, 10, 7], var_em [0, 0, 3]   -> I = [3/1, 0/3, 2/2]        = [3, 0, 1]
    x2: mean [-2, 16, 5], var_em [3, 7, 0]  -> I = [2/2, 6/4, 0/1]        = [1, 1.5, 0]
"""

from __future__ import annotations

import numpy as np
import pytest

from calibration.history_matching.implausibility import (
    Implausibility, effective_nth, implausibility, is_nroy, n_exceeding, nth_max,
)
from calibration.history_matching.nroy import (
    cloud, cutoff_ladder, maximin_lhs, maximin_thin, min_distance, rejection, sample_nroy, slice_sample,
)

Z = np.array([0.0, 10.0, 5.0])
OBS_VAR = np.array([1.0, 4.0, 0.25])
MOD_VAR = np.array([0.0, 5.0, 0.75])
MEAN = np.array([[3.0, 10.0, 7.0], [-2.0, 16.0, 5.0]])
VAR = np.array([[0.0, 0.0, 3.0], [3.0, 7.0, 0.0]])
BY_HAND = np.array([[3.0, 0.0, 1.0], [1.0, 1.5, 0.0]])


def test_matrix_equals_the_formula_by_hand():
    I = implausibility(MEAN, VAR, Z, OBS_VAR, MOD_VAR)
    np.testing.assert_allclose(I, BY_HAND, rtol=0, atol=1e-15)
    # scalars broadcast over outputs
    np.testing.assert_allclose(implausibility([[2.0, 2.0]], [[1.0, 0.0]], [0.0, 0.0], 1.0, 1.0),
                               [[2 / np.sqrt(3), 2 / np.sqrt(2)]])


def test_nth_max_is_one_based():
    np.testing.assert_array_equal(nth_max(BY_HAND, 1), [3.0, 1.5])  # the maximum
    np.testing.assert_array_equal(nth_max(BY_HAND, 2), [1.0, 1.0])  # the second-largest
    np.testing.assert_array_equal(nth_max(BY_HAND, 3), [0.0, 0.0])
    with pytest.raises(ValueError, match="nth"):
        nth_max(BY_HAND, 0)
    with pytest.raises(ValueError, match="nth"):
        nth_max(BY_HAND, 4)


def test_unobserved_outputs_are_left_out():
    z = Z.copy()
    z[0] = np.nan  # output 0 unobserved: x1's max drops from 3 to 1
    I = implausibility(MEAN, VAR, z, OBS_VAR, MOD_VAR)
    assert np.isnan(I[:, 0]).all()
    np.testing.assert_array_equal(nth_max(I, 1), [1.0, 1.5])
    np.testing.assert_array_equal(n_exceeding(I, 0.5), [1, 1])
    imp = Implausibility(z, OBS_VAR, MOD_VAR, cutoff=1.2)
    assert imp.m_obs == 2
    np.testing.assert_array_equal(imp.nroy(I), [True, False])


def test_cutoff_boundary_and_tolerance_conventions():
    # cutoff 3: x1 has I = 3 exactly -> not ruled out (I <= c is NROY)
    np.testing.assert_array_equal(is_nroy(BY_HAND, cutoff=3.0), [True, True])
    np.testing.assert_array_equal(is_nroy(BY_HAND, cutoff=1.2), [False, False])  # x1: 3 > 1.2, x2: 1.5 > 1.2
    np.testing.assert_array_equal(is_nroy(BY_HAND, cutoff=1.2, nth=2), [True, True])  # one violation allowed
    np.testing.assert_array_equal(is_nroy(BY_HAND, cutoff=0.5, nth=2), [False, False])  # two violations each
    # tolerance = fraction of outputs allowed above the cutoff: floor(0.34 * 3) = 1 violation = nth 2
    assert effective_nth(3, tolerance=0.34) == 2 and effective_nth(3, tolerance=0.3) == 1
    assert effective_nth(10, tolerance=0.2) == 3
    np.testing.assert_array_equal(is_nroy(BY_HAND, 1.2, tolerance=0.34), is_nroy(BY_HAND, 1.2, nth=2))
    np.testing.assert_array_equal(is_nroy(BY_HAND, 1.2, tolerance=0.3), [False, False])
    with pytest.raises(ValueError, match="not both"):
        effective_nth(3, nth=2, tolerance=0.5)
    with pytest.raises(ValueError, match="tolerance"):
        effective_nth(3, tolerance=1.0)
    # "at most k violations" == "(k+1)-th largest <= c", on random matrices
    rng = np.random.default_rng(0)
    I = rng.exponential(2.0, (500, 7))
    for k in range(1, 8):
        np.testing.assert_array_equal(nth_max(I, k) <= 3.0, n_exceeding(I, 3.0) <= k - 1)


def test_implausibility_object_checks_and_chunked_classify():
    imp = Implausibility(Z, OBS_VAR, MOD_VAR, cutoff=3.0, nth=1)
    np.testing.assert_array_equal(imp.summary(imp.matrix(MEAN, VAR)), [3.0, 1.5])
    rng = np.random.default_rng(1)
    mean, var = rng.normal(5, 5, (1000, 3)), rng.uniform(0, 2, (1000, 3))
    X = np.arange(1000)
    s, ok = imp.classify(lambda x: (mean[x], var[x]), X, chunk_size=77)
    np.testing.assert_array_equal(s, imp.summary(imp.matrix(mean, var)))
    np.testing.assert_array_equal(ok, s <= 3.0)
    for kw, word in [({"cutoff": 0.0}, "cutoff"), ({"cutoff": -1.0}, "cutoff"), ({"obs_var": 0.0}, "obs_var"),
                     ({"obs_var": [1.0, 1.0]}, "obs_var"), ({"discrepancy_var": -1.0}, "discrepancy_var"),
                     ({"nth": 4}, "nth")]:
        args = {"z": Z, "obs_var": OBS_VAR, **kw}
        with pytest.raises(ValueError, match=word):
            Implausibility(**args)
    with pytest.raises(ValueError, match="no finite value"):
        Implausibility([np.nan, np.nan], 1.0)


# ---------------------------------------------------------------- samplers
def ball(centre, radius):
    """Score = distance to ``centre`` in units of ``radius``; NROY (cutoff 1) is the ball."""
    c = np.asarray(centre)
    return lambda U: np.linalg.norm(U - c, axis=1) / radius


def test_maximin_lhs_and_thinning_are_space_filling_and_seeded():
    a = maximin_lhs(30, 3, seed=4)
    np.testing.assert_array_equal(a, maximin_lhs(30, 3, seed=4))
    # Latin: one point in each of the 30 strata of every dimension
    assert all(len(np.unique(np.floor(a[:, j] * 30))) == 30 for j in range(3))
    rng = np.random.default_rng(0)
    one = min_distance(rng.random((30, 3)))
    assert min_distance(a) > one
    feas = lambda U: U[:, 0] < U[:, 1]  # noqa: E731
    b = maximin_lhs(20, 2, seed=1, feasible=feas)
    assert len(b) == 20 and feas(b).all()
    pool = rng.random((3000, 2))
    idx = maximin_thin(pool, 25, seed=0)
    assert len(set(idx)) == 25
    assert min_distance(pool[idx]) > 3 * min_distance(pool[rng.choice(3000, 25, replace=False)])
    np.testing.assert_array_equal(idx, maximin_thin(pool, 25, seed=0))


@pytest.mark.parametrize("method", ["auto", "lhs", "cloud", "slice"])
def test_sample_nroy_stays_inside_and_covers_a_ball(method):
    centre, r = np.array([0.3, 0.6]), 0.2
    des = sample_nroy(60, 2, ball(centre, r), 1.0, seed=2, method=method)
    assert des.u.shape == (60, 2)
    assert method == "auto" or method in des.method.split("+"), des.method
    dist = np.linalg.norm(des.u - centre, axis=1)
    assert np.all(dist <= r + 1e-12)
    # covers: points in every quadrant of the ball and out to near its edge
    ang = np.arctan2(*(des.u - centre).T[::-1])
    assert len(np.unique(np.floor((ang + np.pi) / (np.pi / 2)))) == 4
    assert dist.max() > 0.8 * r
    again = sample_nroy(60, 2, ball(centre, r), 1.0, seed=2, method=method)
    np.testing.assert_array_equal(des.u, again.u)


def test_small_nroy_found_by_cloud_and_by_the_ladder():
    # volume of a 4-d ball of radius 0.03: pi^2/2 r^4 = 4e-6 of the cube: LHS pilot finds nothing
    d, centre, r = 4, np.full(4, 0.71), 0.03
    score = ball(centre, r)
    des = sample_nroy(20, d, score, 1.0, seed=0, n_pilot=5000)
    assert des.acceptance == 0.0 and des.method.startswith("ladder") and des.rungs[-1] == 1.0
    assert np.all(score(des.u) <= 1.0)
    assert np.ptp(des.u, axis=0).min() > 0.5 * r  # spread over the ball, not one point
    # with one known NROY point, cloud sampling grows from it
    des2 = sample_nroy(20, d, score, 1.0, seed=0, n_pilot=2000, known=centre[None] + 0.01)
    assert "cloud" in des2.method and np.all(score(des2.u) <= 1.0)


def test_sampler_building_blocks_respect_constraints():
    feas = lambda U: U[:, 0] + U[:, 1] < 1.0  # noqa: E731
    score = ball([0.5, 0.4], 0.3)
    U, S, Ua, Sa = rejection(50, 2, score, 1.0, seed=0, feasible=feas, batch=500, max_draws=5000)
    assert len(U) >= 50 and feas(U).all() and np.all(S <= 1.0)
    assert np.all(np.isinf(Sa[~feas(Ua)]))
    P, _ = cloud(200, U[:3], score, 1.0, seed=0, feasible=feas, proposal="ball")
    assert len(P) >= 200 and feas(P).all() and np.all(score(P) <= 1.0) and np.all((P >= 0) & (P <= 1))
    Q, _ = slice_sample(400, U[:5], score, 1.0, seed=0, feasible=feas)
    assert feas(Q).all() and np.all(score(Q) <= 1.0)
    # slice sampling targets the uniform distribution: mean of the (half-ball) region's x + y side
    assert abs(Q[:, 0].mean() - P[:, 0].mean()) < 0.1
    L, SL, rungs = cutoff_ladder(50, Ua, np.where(np.isfinite(Sa), Sa + 5.0, Sa), lambda V: score(V) + 5.0, 5.03,
                                 seed=0, feasible=feas)
    assert rungs[-1] == 5.03 and np.all(SL <= 5.03) and rungs[0] > 5.03 and feas(L).all()


def test_empty_nroy_is_a_clear_error():
    with pytest.raises(RuntimeError, match="NROY"):
        sample_nroy(10, 2, lambda U: np.full(len(U), 10.0), 3.0, seed=0, n_pilot=500, max_evaluations=3000)
