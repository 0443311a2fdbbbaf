"""DMGC signatures: parsing, canonical form, and errors that name the bad part."""
import pytest

from relaxtorch.parallel import Signature, parse_signature


@pytest.mark.parametrize("text, parts", [
    ("D8M8G32C8", (8, 8, 32, 8)),
    ("D32M32G32C32", (32, 32, 32, 32)),
    ("d16m16g16c8", (16, 16, 16, 8)),
    ("  D8M16G8C16 ", (8, 16, 8, 16)),
    ("D32M32G32C8", (32, 32, 32, 8)),
])
def test_parse_valid(text, parts):
    sig = parse_signature(text)
    assert (sig.data, sig.model, sig.gradient, sig.communication) == parts
    assert str(sig) == "D{}M{}G{}C{}".format(*parts)
    assert parse_signature(str(sig)) == sig
    assert parse_signature(sig) is sig
    assert sig.fixed_model == (parts[1] < 32)
    assert sig.full_precision == (parts == (32, 32, 32, 32))


@pytest.mark.parametrize("text, names", [
    ("D8M7G32C8", "M7: model precision must be 8, 16 or 32 bits"),
    ("D4M8G32C8", "D4: dataset precision"),
    ("D8M8G64C8", "G64: gradient precision"),
    ("D8M8G32", "missing the C part"),
    ("D8M8", "missing the G part"),
    ("D8G8M8C8", "G8: parts must come in the order D, M, G, C"),
    ("D8D8M8G8", "D8: D appears twice"),
    ("X8M8G32C8", "X8: unknown part 'X'"),
    ("D8M8GC8", "G: gradient precision needs a bit width"),
    ("D8M8G32C16", "C16: a write cannot carry more bits than the M8 model"),
    ("D8M8G32C8C8", "C8: unexpected part after C"),
    ("D8 M8G32C8", "unexpected ' ' at position 2"),
    ("", "empty"),
    ("8M8G32C8", "unexpected '8' at position 0"),
])
def test_parse_errors_name_the_part(text, names):
    with pytest.raises(ValueError) as info:
        parse_signature(text)
    msg = str(info.value)
    assert msg.startswith(f"Invalid signature: {text!r}")
    assert names in msg


def test_constructor_validates():
    with pytest.raises(ValueError, match="M12"):
        Signature(32, 12, 32, 8)
    with pytest.raises(ValueError, match="C32"):
        Signature(8, 16, 32, 32)
    with pytest.raises(TypeError):
        parse_signature(8)
    assert Signature() == parse_signature("D32M32G32C32")
    assert len({Signature(8, 8, 32, 8), parse_signature("D8M8G32C8")}) == 1
