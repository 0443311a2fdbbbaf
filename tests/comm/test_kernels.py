"""The compiled kernels of relaxtorch.comm._kernels against their references, bit for bit:
slow Python loops (the permutation), torch ops (windows, top-K, QSGD, the CocktailSGD
gather and update), and the statistics of the subsets they draw."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relaxtorch.comm import QSGD, Compose, RandomK, TopK, _kernels
from relaxtorch.comm.sparsify import _cycle_windows, _cycle_windows_reference, _permutation

_M64 = (1 << 64) - 1


def _permutation_loop(seed: int, n: int, k: int) -> list[int]:
    """Forward Fisher-Yates from splitmix64 with Lemire's rejection, in Python integers."""
    out, state = list(range(n)), seed

    def draw():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & _M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return (z ^ (z >> 31)) >> 32

    for i in range(min(k, n - 1)):
        bound = n - i
        m = draw() * bound
        if (m & 0xFFFFFFFF) < bound:
            floor = ((1 << 32) - bound) % bound
            while (m & 0xFFFFFFFF) < floor:
                m = draw() * bound
        j = i + (m >> 32)
        out[i], out[j] = out[j], out[i]
    return out


@pytest.mark.parametrize("n,k", [(1, 1), (2, 2), (7, 3), (1000, 1000), (1000, 37), (4099, 4099)])
def test_permutation_matches_the_loop(n, k):
    for seed in (0, 12345, (1 << 63) - 1):
        got = _permutation(seed, n, k)
        assert got.dtype == torch.int32
        assert got[:k].tolist() == _permutation_loop(seed, n, k)[:k]
        assert torch.equal(got[:k], _permutation(seed, n)[:k])  # a prefix does not depend on the rest
        assert sorted(got.tolist()) == list(range(n))


def test_permutation_is_uniform():
    """Each position's value over 6000 seeds: uniform over 0..4 (chi-square, 16 cells x 4 dof),
    and the pairs (perm[0], perm[1]) cover all 20 ordered pairs about equally."""
    n, draws = 5, 6000
    perms = torch.stack([_permutation(s, n) for s in range(draws)]).long()
    counts = torch.stack([torch.bincount(perms[:, i], minlength=n) for i in range(n)]).double()
    expected = draws / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = n * (n - 1)
    assert chi2 < dof + 5 * math.sqrt(2 * dof)
    pairs = torch.bincount(perms[:, 0] * n + perms[:, 1], minlength=n * n).double()
    pairs = pairs[pairs > 0]
    assert pairs.numel() == 20
    chi2 = float(((pairs - draws / 20) ** 2 / (draws / 20)).sum())
    assert chi2 < 19 + 5 * math.sqrt(38)


@pytest.mark.parametrize("numel,k", [(1000, 100), (1005, 100), (281602, 28160), (50, 7), (300, 1)])
def test_cycle_windows_match_sorting(numel, k):
    _cycle_windows.cache_clear()
    assert torch.equal(_cycle_windows(7, numel, k), _cycle_windows_reference(7, numel, k))


def _window_labels_loop(seed: int, n: int, nwin: int, k: int) -> list[int]:
    """The labels 0..0, 1..1, ..., nwin.. shuffled by forward Fisher-Yates, two 32-bit draws
    per splitmix64 output (high half first; a rejection redraws from the next output's high half)."""
    labels = [min(i // k, nwin) for i in range(n)]
    state = seed

    def splitmix():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & _M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)

    halves: list[int] = []
    for i in range(n - 1):
        if not halves:
            z = splitmix()
            halves = [z >> 32, z & 0xFFFFFFFF]
        bound = n - i
        m = halves.pop(0) * bound
        if (m & 0xFFFFFFFF) < bound:
            floor = ((1 << 32) - bound) % bound
            while (m & 0xFFFFFFFF) < floor:
                m = (splitmix() >> 32) * bound
        j = i + (m >> 32)
        labels[i], labels[j] = labels[j], labels[i]
    return labels


@pytest.mark.parametrize("n,k", [(1, 1), (2, 1), (7, 3), (1000, 100), (1001, 7), (4099, 4099)])
def test_window_labels_match_the_loop(n, k):
    nwin = n // k
    for seed in (0, 12345, (1 << 63) - 1):
        got = np.empty(n, np.uint8 if nwin < 255 else np.uint32)
        _kernels.window_labels(seed, nwin, k, got)
        assert got.tolist() == _window_labels_loop(seed, n, nwin, k)


def test_cycle_windows_are_a_uniform_partition():
    """n=7, k=2: three disjoint sorted windows of 2 and one position left over; over 9450 seeds
    each of the 7!/(2!^3) = 630 labelled partitions appears about equally (chi-square)."""
    n, k, draws = 7, 2, 9450
    seen = {}
    for s in range(draws):
        _cycle_windows.cache_clear()
        w = _cycle_windows(s, n, k)
        assert w.shape == (3, 2) and torch.equal(w, w.sort(dim=1).values)
        assert w.unique().numel() == 6
        key = tuple(w.reshape(-1).tolist())
        seen[key] = seen.get(key, 0) + 1
    assert len(seen) == 630
    counts = torch.tensor(list(seen.values()), dtype=torch.float64)
    expected = draws / 630
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 629 + 5 * math.sqrt(2 * 629)


def test_randomk_subsets_are_uniform():
    """Each position is in a step's subset with probability k/n (within 5 standard errors)."""
    n, steps = 200, 4000
    c = RandomK(0.1, seed=3)
    hits = torch.zeros(n)
    for s in range(steps):
        idx = c.indices(n, s)
        assert idx.numel() == 20 and torch.equal(idx, idx.sort().values) and idx.unique().numel() == 20
        hits[idx] += 1
    p = 20 / n
    se = math.sqrt(p * (1 - p) / steps)
    assert ((hits / steps - p).abs() <= 5 * se).all()


def _x(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * torch.rand(n, generator=g) * 3


def _ties(n, seed):
    """Many exact ties (zeros and repeated magnitudes of both signs), a NaN, infinities."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-4, 5, (n,), generator=g).float() * 0.5
    x[::97] = float("nan")
    x[5::131] = float("inf")
    x[7::151] = -float("inf")
    return x


def _spread(n, seed):
    """Magnitudes over every float32 exponent, subnormals, zeros of both signs, inf and NaN."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2**31, (n,), generator=g, dtype=torch.int64).to(torch.int32)
    x = bits.view(torch.float32).clone()
    x[::17] = 0.0
    x[3::19] = -0.0
    return x


@pytest.mark.parametrize("make", [_x, _ties, _spread, lambda n, s: torch.zeros(n), lambda n, s: torch.full((n,), -2.5)])
@pytest.mark.parametrize("n", [1, 7, 1000, 28160])
def test_kth_largest_key_matches_sorting(make, n):
    """The radix select's threshold key, and the counts above and at it, against a sort of the keys."""
    x = make(n, n).contiguous()
    keys = np.empty(n, np.uint32)
    _kernels.magnitude_keys(x.numpy(), keys)
    ordered = np.sort(keys)[::-1]
    for k in sorted(k for k in {1, 2, n // 3, n // 2, n - 1, n} if 1 <= k <= n):
        t, above, equal = _kernels.kth_largest_key(x.numpy(), k)
        assert t == ordered[k - 1]
        assert above == int((keys > t).sum()) and equal == int((keys == t).sum())


@pytest.mark.parametrize("make", [_x, _ties])
@pytest.mark.parametrize("n,ratio", [(1, 0.5), (10, 0.3), (1000, 0.2), (28160, 0.2), (1000, 0.01), (999, 1.0)])
def test_topk_compiled_equals_reference(make, n, ratio):
    x = make(n, n)
    c = TopK(ratio)
    k = c.kept(n)
    fast, ref = c._compress_cpu(x, n, k, x), c._compress_torch(x, n, k, x)
    assert fast.tensors.keys() == ref.tensors.keys()
    for name in fast.tensors:
        assert torch.equal(fast.tensors[name], ref.tensors[name]) or (
            name == "values" and torch.equal(fast.tensors[name].nan_to_num(7.0), ref.tensors[name].nan_to_num(7.0)))
    with _kernels.disabled():
        want = c.decompress(ref)
    got = c.decompress(fast)
    assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))


def test_topk_ties_go_to_the_lowest_positions():
    x = torch.tensor([1.0, -3.0, 3.0, 2.0, 3.0, -3.0, 0.0])
    y = TopK(3 / 7).roundtrip(x)
    assert y.tolist() == [0.0, -3.0, 3.0, 0.0, 3.0, 0.0, 0.0]
    z = torch.tensor([0.0, float("nan"), 5.0, -0.0])
    assert torch.isnan(TopK(0.25).roundtrip(z)[1])  # NaN counts as the largest magnitude


@pytest.mark.parametrize("bits,bucket,rounding", [(4, 128, "stochastic"), (3, 7, "stochastic"), (2, 5, "stochastic"),
                                                  (8, 16, "nearest"), (12, 33, "stochastic"), (16, 4, "nearest")])
@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e-41, 1e30])
def test_qsgd_compiled_equals_reference(bits, bucket, rounding, scale):
    x = _x(5000, bits) * scale
    x[100:100 + bucket] = 0.0  # an all-zero bucket
    q = QSGD(bits, bucket, rounding)
    noise = torch.rand(x.numel(), generator=torch.Generator().manual_seed(3)) if rounding == "stochastic" else None
    decoded = torch.empty(x.numel())
    codes, scales = q._encode_cpu(x, noise, decoded)
    want_codes, want_scales = q._encode_torch(x, noise)
    assert torch.equal(codes, want_codes) and torch.equal(scales, want_scales)
    p = q.compress(x, generator=torch.Generator().manual_seed(3))
    with _kernels.disabled():
        p_ref = q.compress(x, generator=torch.Generator().manual_seed(3))
        want = q.decompress(p_ref)
    assert torch.equal(p.tensors["codes"], p_ref.tensors["codes"])
    assert torch.equal(q.decompress(p), want) and torch.equal(decoded, want)


def test_qsgd_non_finite_buckets_compiled_equals_reference():
    x = _x(64, 1)
    x[3], x[20], x[40] = float("inf"), float("nan"), -float("inf")
    q = QSGD(4, 16)
    noise = torch.rand(64, generator=torch.Generator().manual_seed(0))
    c1, s1 = q._encode_cpu(x, noise)
    c2, s2 = q._encode_torch(x, noise)
    assert torch.equal(c1, c2) and torch.equal(s1.isnan(), s2.isnan()) and torch.equal(s1[3], s2[3])
    assert s1.isnan().tolist() == [True, True, True, False]


@pytest.mark.parametrize("stack", [Compose(RandomK(0.1, seed=2), TopK(0.2), QSGD(4, 128)),
                                   Compose(TopK(0.2), QSGD(4, 128)), Compose(TopK(0.05), QSGD(3, 7)),
                                   Compose(RandomK(0.5, scale=True, seed=1), QSGD(4, 8)), QSGD(4, 128), TopK(0.3)])
def test_compress_and_decode_is_compress_then_decompress(stack):
    x = _x(20000, 5)
    p, sent = stack.compress_and_decode(x, generator=torch.Generator().manual_seed(1), step=3)
    q = stack.compress(x, generator=torch.Generator().manual_seed(1), step=3)
    assert p.tensors.keys() == q.tensors.keys()
    assert all(torch.equal(p.tensors[k], q.tensors[k]) for k in p.tensors)
    assert torch.equal(sent, stack.decompress(q))
    with _kernels.disabled():  # the torch path sends the same bits
        r = stack.compress(x, generator=torch.Generator().manual_seed(1), step=3)
        assert all(torch.equal(r.tensors[k], q.tensors[k]) for k in r.tensors)
        assert torch.equal(stack.decompress(r), sent)


def test_gather_and_update_kernels():
    g = torch.Generator().manual_seed(0)
    param, anchor = torch.randn(100, generator=g), torch.randn(130, generator=g)
    pos = torch.randperm(100, generator=g)[:40].sort().values + 30
    out = torch.empty(40)
    _kernels.gather_delta(param.numpy(), 30, anchor.numpy(), pos.numpy(), out.numpy())
    assert torch.equal(out, param[pos - 30] - anchor[pos])
    update, sent = torch.randn(40, generator=g), torch.randn(40, generator=g)
    update[::3] = 0.0  # skipped terms: no update here, or update == sent
    sent[1::4] = update[1::4]
    p2, a2 = param.clone(), anchor.clone()
    a2.index_add_(0, pos, update)
    p2.index_add_(0, pos - 30, update - sent)
    _kernels.apply_update(param.numpy(), 30, anchor.numpy(), pos.numpy(), update.numpy(), sent.numpy())
    assert torch.equal(param, p2) and torch.equal(anchor, a2)


@pytest.mark.parametrize("n,density", [(1003, 0.3), (1024, 0.2), (7, 0.5), (64, 0.0), (64, 1.0), (200, 0.03)])
def test_mask_scatter_matches_nonzero(n, density):
    """Lengths with and without a partial last byte, empty and full masks, all-zero bytes."""
    m = torch.rand(n, generator=torch.Generator().manual_seed(2)) < density
    mask = torch.from_numpy(np.packbits(m.numpy(), bitorder="little"))
    values = torch.randn(int(m.sum()), generator=torch.Generator().manual_seed(3))
    out = torch.full((n,), float("nan"))
    _kernels.mask_scatter(mask.numpy(), values.numpy(), out.numpy())
    want = torch.zeros(n)
    want[m] = values
    assert torch.equal(out, want)


def test_gather_scatter_kernels_match_indexing():
    g = torch.Generator().manual_seed(5)
    src = torch.randn(500, generator=g)
    idx = torch.randperm(500, generator=g)[:123].sort().values
    out = torch.empty(123)
    _kernels.gather(src.numpy(), idx.numpy(), out.numpy())
    assert torch.equal(out, src[idx])
    x = torch.randn(123, generator=g)
    want = x + src[idx]
    _kernels.add_gathered(x.numpy(), src.numpy(), idx.numpy())
    assert torch.equal(x, want)
    dst, ref = src.clone(), src.clone()
    ref[idx] = want
    _kernels.scatter(dst.numpy(), idx.numpy(), want.numpy())
    assert torch.equal(dst, ref)


def test_apply_and_gather_is_apply_then_gather():
    g = torch.Generator().manual_seed(4)
    param, anchor = torch.randn(200, generator=g), torch.randn(250, generator=g)
    apos = torch.randperm(200, generator=g)[:60].sort().values + 50
    gpos = torch.randperm(200, generator=g)[:70].sort().values + 50  # overlaps apos
    update, sent = torch.randn(60, generator=g), torch.randn(60, generator=g)
    update[::5] = 0.0
    p2, a2 = param.clone(), anchor.clone()
    _kernels.apply_update(p2.numpy(), 50, a2.numpy(), apos.numpy(), update.numpy(), sent.numpy())
    want = p2[gpos - 50] - a2[gpos]
    out = torch.empty(70)
    _kernels.apply_and_gather(param.numpy(), 50, anchor.numpy(), apos.numpy(), update.numpy(), sent.numpy(),
                              gpos.numpy(), out.numpy())
    assert torch.equal(param, p2) and torch.equal(anchor, a2) and torch.equal(out, want)
