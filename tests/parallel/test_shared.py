"""Fixed-point model store round trips, data codes, and atomic checkpoints."""
import os

import numpy as np
import pytest
import torch

from relaxtorch.numbers import quantize
from relaxtorch.numbers.formats import FixedPoint
from relaxtorch.parallel import load_checkpoint, save_checkpoint
from relaxtorch.parallel.shared import code_range, data_codes, decode, encode, model_format, share


@pytest.mark.parametrize("bits, fl", [(8, 5), (8, 0), (16, 12), (16, -2)])
def test_every_code_round_trips(bits, fl):
    fmt = FixedPoint(bits, fl)
    lo, hi = code_range(fmt)
    codes = np.arange(lo, hi + 1, dtype=np.int64)
    values = decode(codes.astype(np.int8 if bits == 8 else np.int16), fmt)
    np.testing.assert_array_equal(values, codes * 2.0**-fl)  # exact: every code is a float32
    back = encode(values, fmt)
    assert back.dtype == (torch.int8 if bits == 8 else torch.int16)
    np.testing.assert_array_equal(back.numpy(), codes)


def test_encode_matches_quantize_and_saturates():
    fmt = FixedPoint(8, 4)
    x = torch.linspace(-12, 12, 997)
    codes = encode(x, fmt)
    np.testing.assert_array_equal(decode(codes, fmt), quantize(x, fmt).numpy())
    assert codes.min() == -128 and codes.max() == 127
    sr = encode(torch.full((20000,), 0.3), fmt, "stochastic", generator=0)
    assert abs(decode(sr, fmt).mean() - 0.3) < 4 * 0.0625 / np.sqrt(20000) * 2


@pytest.mark.parametrize("bits, rng, fl", [(8, 4.0, 5), (8, 1.0, 7), (8, 5.0, 4), (16, 4.0, 13), (8, 0.25, 9)])
def test_model_format(bits, rng, fl):
    fmt = model_format(bits, rng)
    assert fmt == FixedPoint(bits, fl)
    assert rng * 127 / 128 <= fmt.max < 2 * rng  # about +-rng, never half of it
    with pytest.raises(ValueError, match="model_range"):
        model_format(8, 0.0)


def test_data_codes():
    x = np.array([0.0, 0.5, -1.0, 0.25, 1.0], np.float32)
    same, scale = data_codes(x, 32)
    assert same is not None and scale == 1.0 and same.dtype == np.float32
    c8, s8 = data_codes(x, 8)
    assert c8.dtype == np.int8 and s8 == pytest.approx(1 / 127)
    assert np.abs(c8 * s8 - x).max() <= s8 / 2 + 1e-7
    c16, s16 = data_codes(x, 16)
    assert c16.dtype == np.int16 and np.abs(c16 * s16 - x).max() <= s16 / 2 + 1e-9


def test_share_is_shared_memory_copy():
    a = np.arange(10, dtype=np.float32)
    t = share(a)
    assert t.is_shared() and np.array_equal(t.numpy(), a)
    a[0] = 99
    assert t[0] == 0


def test_checkpoint_round_trip_is_atomic_and_weights_only(tmp_path):
    path = tmp_path / "sub" / "model.pt"
    model = {"w": np.linspace(-1, 1, 7, dtype=np.float32)}
    raw = {"w": np.arange(-3, 4, dtype=np.int8)}
    save_checkpoint(path, model, raw=raw, meta={"signature": "D8M8G32C8", "updates": 12})
    assert sorted(os.listdir(path.parent)) == ["model.pt"]  # no temporary file left
    ck = load_checkpoint(path)
    np.testing.assert_array_equal(ck["model"]["w"], model["w"])
    np.testing.assert_array_equal(ck["raw"]["w"], raw["w"])
    assert ck["meta"] == {"signature": "D8M8G32C8", "updates": 12}
    torch.load(path, weights_only=True)  # loads without unpickling code
    save_checkpoint(path, {"w": np.zeros(3, np.float32)})  # replaces in place
    assert load_checkpoint(path)["model"]["w"].tolist() == [0, 0, 0]
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a relaxtorch hogwild checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
