"""io/capture_stats.py against numpy on real tensors (a small Keras model's activations and random data)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from qinspect.io.capture_stats import LayerStats, bin_values


def _tensor(seed: int = 0, n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6, 5, 4)).astype(np.float32) * np.array([0.01, 1, 30, 1e4], np.float32)
    x[x < -3] = 0.0  # ReLU-like zeros, and some -0.0
    x[0, 0, 0, 0] = -0.0
    return x


@pytest.mark.parametrize("batch", [1, 3, 4, 10, 32])
def test_from_tensor_matches_numpy(batch: int) -> None:
    x = _tensor()
    s = LayerStats.from_tensor(x, batch, name="conv")
    starts = range(0, len(x), batch)
    np.testing.assert_array_equal(s.batch_min, [x[i:i + batch].min() for i in starts])
    np.testing.assert_array_equal(s.batch_max, [x[i:i + batch].max() for i in starts])
    np.testing.assert_array_equal(s.channel_min, x.min(axis=(0, 1, 2)))
    np.testing.assert_array_equal(s.channel_max, x.max(axis=(0, 1, 2)))
    assert s.count == x.size and s.nonfinite == 0 and s.finite_count() == x.size
    assert s.min() == x.min() and s.max() == x.max() and s.abs_max() == np.abs(x).max()


def test_histogram_bins_hold_their_values() -> None:
    x = _tensor(1).reshape(-1)
    bins, counts, _ = bin_values(x)
    s = LayerStats.from_tensor(x.reshape(-1, 1), 4)
    low, high = s.hist_edges()
    assert np.all(low < high) and np.all(np.diff(low) > 0)  # sorted by value, distinct bins
    for b, c, lo, hi in zip(bins, counts, low, high, strict=True):
        members = x[(x.view(np.uint32) >> 16) == b].astype(np.float64)
        assert members.size == c
        if b & 0x8000:
            assert np.all((members > lo) & (members <= hi))
        else:
            assert np.all((members >= lo) & (members < hi))


@pytest.mark.parametrize("q", [0.0, 0.001, 0.1, 0.5, 0.9, 0.999, 0.9999, 1.0])
def test_quantile_within_a_bin_of_numpy(q: float) -> None:
    x = _tensor(2, 40)
    s = LayerStats.from_tensor(x, 8)
    exact = float(np.quantile(x.astype(np.float64), q, method="inverted_cdf"))
    assert abs(s.quantile(q) - exact) <= abs(exact) * 2.0**-7 + 1e-40
    p = 100 * q
    exact_abs = float(np.percentile(np.abs(x).astype(np.float64), p, method="inverted_cdf"))
    assert abs(s.abs_percentile(p) - exact_abs) <= exact_abs * 2.0**-7 + 1e-40


def test_streamed_pieces_merge_to_the_whole() -> None:
    x = _tensor(3, 23)
    whole = LayerStats.from_tensor(x, 5, name="a")
    for cuts in ([7, 14], [5, 10, 20], [1, 2, 3, 22]):
        edges = [0, *cuts, len(x)]
        merged = None
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            piece = LayerStats.from_tensor(x[a:b], 5, name="a", start=a)
            merged = piece if merged is None else merged.merge(piece)
        assert merged is not None and merged.n_samples == 23 and merged.n_batches == 5
        for key in ("batch_min", "batch_max", "channel_min", "channel_max", "hist_bins", "hist_counts"):
            np.testing.assert_array_equal(getattr(merged, key), getattr(whole, key))
        assert merged.count == whole.count


def test_merge_refuses_a_gap() -> None:
    x = _tensor(4, 6)
    with pytest.raises(ValueError):
        LayerStats.from_tensor(x[:3], 2).merge(LayerStats.from_tensor(x[4:], 2, start=4))


def test_nonfinite_counted_not_binned() -> None:
    x = _tensor(5, 4)
    x[1, 0, 0, 0], x[2, 1, 1, 1], x[3, 2, 2, 2] = np.nan, np.inf, -np.inf
    s = LayerStats.from_tensor(x, 2)
    assert s.nonfinite == 3 and s.finite_count() == x.size - 3
    assert np.isnan(s.batch_min[0]) and np.isinf(s.batch_max[1])


def test_write_read_round_trip(tmp_path) -> None:
    x = _tensor(6, 9)
    s = LayerStats.from_tensor(x, 4, name="block/conv")
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        s.write(h5.create_group("g"))
    with h5py.File(tmp_path / "s.h5", "r") as h5:
        r = LayerStats.read(h5["g"])
    assert r.name == "block/conv" and r.batch_size == 4 and r.n_samples == 9 and r.count == s.count
    for key in ("batch_min", "batch_max", "channel_min", "channel_max", "hist_bins", "hist_counts"):
        np.testing.assert_array_equal(getattr(r, key), getattr(s, key))
        assert getattr(r, key).dtype == getattr(s, key).dtype


def test_real_activations_from_keras() -> None:
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (12, 16, 16, 3)).astype(np.float32)
    inp = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    act = keras.Model(inp, y)(x).numpy()
    s = LayerStats.from_tensor(act, 5)
    np.testing.assert_array_equal(s.channel_max, act.max(axis=(0, 1, 2)))
    exact = float(np.quantile(act, 0.99, method="inverted_cdf"))
    assert abs(s.quantile(0.99) - exact) <= exact * 2.0**-7
    assert s.hist_counts.sum() == act.size


def test_accumulator_equals_whole_tensor() -> None:
    from qinspect.io.capture_stats import StatsAccumulator

    x = _tensor(8, 19)
    x[4, 1, 1, 1] = np.nan
    x[10] *= 100  # sample 10 holds its batch's min and max, so losing it shows
    whole = LayerStats.from_tensor(x, 4, name="n")
    acc = StatsAccumulator("n", 4)
    # (9, 10) and (10, 11) fall inside one calibration batch, which pieces before and after also touch.
    for a, b in ((0, 3), (3, 9), (9, 10), (10, 11), (11, 19)):
        acc.add(x[a:b])
    got = acc.result()
    assert got.n_samples == 19 and got.count == whole.count and got.nonfinite == 1
    for key in ("batch_min", "batch_max", "channel_min", "channel_max", "hist_bins", "hist_counts"):
        np.testing.assert_array_equal(getattr(got, key), getattr(whole, key))


def test_summaries_of_pieces_within_batches_equal_the_tensor() -> None:
    """What the capture's TensorFlow path hands over (channel extrema, bit counts) gives the same stats."""
    from qinspect.io.capture_stats import StatsAccumulator

    x = _tensor(9, 11)
    whole = LayerStats.from_tensor(x, 4)
    acc = StatsAccumulator("n", 4)
    acc.add(x[:2])  # kept samples go through add(); the rest as summaries within calibration batches
    for a, b in ((2, 4), (4, 8), (8, 9), (9, 11)):
        c = x[a:b].reshape(-1, 4)
        counts = np.bincount(x[a:b].reshape(-1).view(np.uint32) >> 16, minlength=65536)
        acc.add_summary(b - a, c.min(axis=0), c.max(axis=0), counts)
    got = acc.result()
    for key in ("batch_min", "batch_max", "channel_min", "channel_max", "hist_bins", "hist_counts"):
        np.testing.assert_array_equal(getattr(got, key), getattr(whole, key))
    with pytest.raises(ValueError):
        StatsAccumulator("n", 4).add_summary(5, c.min(axis=0), c.max(axis=0), counts)
