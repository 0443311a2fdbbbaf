"""LIBSVM files that cannot be read: one LibSVMError naming the file (and line), never a traceback's type."""
import bz2
import gzip
import lzma

import pytest

from relaxtorch.data.libsvm import LibSVMError, load_libsvm

GOOD = b"1 1:0.5 3:2\n-1 2:1\n" * 50


@pytest.mark.parametrize("name, content, line, reason", [
    ("x.svm.gz", b"garbage", 0, "not a valid gzip file: Not a gzipped file"),
    ("x.svm.gz", gzip.compress(GOOD)[:40], None, "not a valid gzip file: truncated"),
    ("x.svm.gz", gzip.compress(GOOD)[:-4], None, "not a valid gzip file"),
    ("x.svm.bz2", b"garbage", 0, "not a valid bzip2 file: Invalid data stream"),
    ("x.svm.bz2", bz2.compress(GOOD)[:60], None, "not a valid bzip2 file: truncated"),
    ("x.svm.xz", b"garbage", 0, "not a valid xz file"),
    ("x.svm.xz", lzma.compress(GOOD)[:60], None, "not a valid xz file: truncated"),
])
def test_damaged_compressed_files(tmp_path, name, content, line, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(LibSVMError) as info:
        load_libsvm(p)
    assert str(info.value).startswith(f"{p}:") and reason in str(info.value), str(info.value)
    assert line is None or info.value.line == line


@pytest.mark.parametrize("name, compress", [("a.svm.gz", gzip.compress), ("a.svm.bz2", bz2.compress),
                                            ("a.svm.xz", lzma.compress)])
def test_compressed_files_load(tmp_path, name, compress):
    p = tmp_path / name
    p.write_bytes(compress(GOOD))
    assert load_libsvm(p).n_examples == 100


def test_a_directory(tmp_path):
    with pytest.raises(LibSVMError, match=r":0: is a directory, not a LIBSVM file$"):
        load_libsvm(tmp_path)


@pytest.mark.parametrize("content, line, what", [
    ("1 1:0.5\n-1 2:1e39\n", 2, "value '1e39' is beyond float32's range"),
    ("1 1:0.5\n-1 2:-3.5e38\n", 2, "value '-3.5e38' is beyond float32's range"),
    ("1e39 1:0.5\n", 1, "label '1e39' is beyond float32's range"),
    ("1 1:1e400\n", 1, "value '1e400' is not a finite number"),
])
def test_values_float32_cannot_hold_are_refused_at_their_line(tmp_path, content, line, what):
    p = tmp_path / "f.svm"
    p.write_text(content)
    with pytest.raises(LibSVMError) as info:
        load_libsvm(p)
    assert info.value.line == line and what in str(info.value)


def test_the_largest_float32_loads(tmp_path):
    p = tmp_path / "f.svm"
    p.write_text("1 1:3.4028234e38\n")
    assert float(load_libsvm(p).values[0]) == pytest.approx(3.4028234e38)
