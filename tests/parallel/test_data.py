"""Generators with a planted model, and the LIBSVM loader (errors name file, line, reason)."""
import gzip

import numpy as np
import pytest

from relaxtorch.data.libsvm import LibSVMError, load_libsvm, save_libsvm
from relaxtorch.data.sparse import SparseDataset, document_frequencies, make_bag_of_words, make_low_rank
from relaxtorch.parallel import _kernels as K


def test_bag_of_words_shape_sparsity_and_determinism():
    a = make_bag_of_words(5000, 2000, 20, skew=1.0, max_df=0.1, seed=3)
    b = make_bag_of_words(5000, 2000, 20, skew=1.0, max_df=0.1, seed=3)
    c = make_bag_of_words(5000, 2000, 20, skew=1.0, max_df=0.1, seed=4)
    assert a.n_examples == 5000 and a.n_features == 2000
    assert abs(a.nnz / a.n_examples - 20) < 0.5
    for x, y in ((a.indices, b.indices), (a.values, b.values), (a.y, b.y)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.indices, c.indices)
    rows = np.split(a.indices, a.indptr[1:-1])
    assert all(np.all(np.diff(r) > 0) for r in rows)  # sorted, no duplicates
    norms = np.sqrt(np.add.reduceat(a.values.astype(np.float64) ** 2, a.indptr[:-1]))
    np.testing.assert_allclose(norms[np.diff(a.indptr) > 0], 1.0, rtol=1e-5)  # unit rows, like RCV1
    df = np.sort(np.bincount(a.indices, minlength=2000))[::-1] / 5000
    assert df.max() <= 0.1 * 1.2 and df[:5].min() > 0.07  # the cap holds; common words are common
    assert set(np.unique(a.y).tolist()) == {-1.0, 1.0}


def test_sparsity_controls():
    q = document_frequencies(1000, 30, 1.0, 0.2)
    assert q.sum() == pytest.approx(30) and q.max() == pytest.approx(0.2)
    flat = document_frequencies(1000, 30, 0.0, 1.0)
    np.testing.assert_allclose(flat, 0.03)
    with pytest.raises(ValueError, match="nnz"):
        document_frequencies(100, 30, 1.0, 0.2)


def test_known_optimum():
    """Least squares without noise: the planted model reaches loss 0; separable: margins agree."""
    sq = make_bag_of_words(3000, 500, 15, task="squared", seed=1)
    assert K.sparse_objective(sq.indptr, sq.indices, sq.values, sq.y, sq.w_true, K.SQUARED, 0.0) < 1e-12
    sep = make_bag_of_words(3000, 500, 15, task="separable", seed=1)
    w = sep.w_true * 1e3  # scaled up, the separator has hinge loss 0
    assert K.sparse_objective(sep.indptr, sep.indices, sep.values, sep.y, w, K.HINGE, 0.0) < 0.01


def test_low_rank():
    d = make_low_rank(50, 40, 3, 0.3, seed=2)
    assert d.n_examples == 600 and d.values.dtype == np.float32
    assert len(set(zip(d.rows.tolist(), d.cols.tolist()))) == 600  # distinct cells
    full = d.L_true.astype(np.float64) @ d.R_true.T.astype(np.float64)
    np.testing.assert_allclose(d.values, full[d.rows, d.cols], rtol=1e-5, atol=1e-6)
    assert K.mc_objective(d.rows, d.cols, d.values, d.L_true, d.R_true, 0.0) < 1e-10


def test_dataset_validation():
    with pytest.raises(ValueError, match="indices"):
        SparseDataset(np.array([0, 1]), np.array([5]), np.array([1.0]), np.array([1.0]), 3)
    with pytest.raises(ValueError, match="indptr"):
        SparseDataset(np.array([0, 2]), np.array([1]), np.array([1.0]), np.array([1.0]), 3)
    with pytest.raises(ValueError, match="task"):
        make_bag_of_words(10, 100, 5, task="poisson")


def test_libsvm_round_trip(tmp_path):
    ds = make_bag_of_words(200, 300, 8, seed=5)
    path = tmp_path / "d.svm"
    save_libsvm(ds, path)
    back = load_libsvm(path, n_features=300)
    for x, y in ((back.indptr, ds.indptr), (back.indices, ds.indices), (back.y, ds.y)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(back.values, ds.values, rtol=1e-7)
    gz = tmp_path / "d.svm.gz"
    with gzip.open(gz, "wt") as f:
        f.write(path.read_text())
    assert load_libsvm(gz, n_features=300).nnz == ds.nnz


def test_libsvm_format_details(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("# header comment\n+1 qid:3 3:0.5 1:2 # trailing\n\n-1\n0 2:1e-3\n")
    d = load_libsvm(p)
    assert d.n_examples == 3 and d.n_features == 3
    assert d.indices.tolist() == [0, 2, 1] and d.indptr.tolist() == [0, 2, 2, 3]  # one-based, sorted per row
    assert d.y.tolist() == [1, -1, 0]
    z = tmp_path / "z.txt"
    z.write_text("1 0:1 4:2\n")
    assert load_libsvm(z).indices.tolist() == [0, 4]  # index 0 used: zero-based


@pytest.mark.parametrize("content, line, reason", [
    ("1 1:0.5\nabc 2:1\n", 2, "label 'abc' is not a finite number"),
    ("1 1:0.5\n1 2:1 3\n", 2, "token '3': expected index:value"),
    ("1 1:0.5\n\n# c\n1 x:1\n", 4, "index 'x' is not an integer"),
    ("1 1:0.5 2:abc\n", 1, "value 'abc' is not a finite number"),
    ("1 1:nan\n", 1, "value 'nan' is not a finite number"),
    ("1 2:1 2:3\n", 1, "index 2 appears twice"),
    ("1 -3:1\n", 1, "index -3 is negative"),
    ("1,2 1:1\n", 1, "multi-label"),
    ("1 qid:a 1:1\n", 1, "qid must be an integer"),
    ("1 1:1\n1 9:1\n", 2, "index 9 exceeds n_features=5"),
    ("", 0, "no examples"),
])
def test_libsvm_errors_name_file_line_reason(tmp_path, content, line, reason):
    p = tmp_path / "bad.svm"
    p.write_text(content)
    with pytest.raises(LibSVMError) as info:
        load_libsvm(p, n_features=5 if "9:1" in content else None)
    err = info.value
    assert (err.path, err.line) == (str(p), line)
    assert str(err).startswith(f"{p}:{line}: ") and reason in str(err)


def test_libsvm_bad_bytes_and_one_based_zero(tmp_path):
    p = tmp_path / "bin.svm"
    p.write_bytes(b"1 1:1\n\xff\xfe 2:1\n")
    with pytest.raises(LibSVMError, match=r"bin.svm:2: not UTF-8"):
        load_libsvm(p)
    q = tmp_path / "zero.svm"
    q.write_text("1 1:1\n1 0:1\n")
    with pytest.raises(LibSVMError, match=r"zero.svm:2: index 0 in a one-based file"):
        load_libsvm(q, zero_based=False)
    with pytest.raises(FileNotFoundError):
        load_libsvm(tmp_path / "missing.svm")
