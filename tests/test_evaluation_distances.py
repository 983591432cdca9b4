"""evaluation.distances: how close 2-D samples are to their distribution, measured against fresh
points of the same generator in the space the model sees."""

import numpy as np

from ddpmkit import build
from ddpmkit.data.toy import FRESH_SEED, fresh_points
from ddpmkit.evaluation import toy_distances

from helpers import toy_config


def test_fresh_points_of_the_same_law_are_close_and_shifted_ones_far():
    config = toy_config()
    config = build.resolve_config(config, build.modality(config).load(0)[1])
    same = fresh_points(config.data, 2000, seed=1)
    near = toy_distances(config, same)
    far = toy_distances(config, same + np.float32(0.5) * config.data.scale)  # half a unit of model space
    assert abs(near["mmd"]) < 2e-3 and near["sliced_wasserstein"] < 0.05
    assert far["mmd"] > 20 * abs(near["mmd"]) and far["sliced_wasserstein"] > 5 * near["sliced_wasserstein"]
    assert np.array_equal(fresh_points(config.data, 10), fresh_points(config.data, 10, FRESH_SEED))  # one reference, whatever the run
