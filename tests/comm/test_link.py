"""parse_link: every number finite and in range, each bad part named with its own reason."""
import math

import pytest

from relaxtorch.comm.link import LinkModel, parse_link


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("  ", "empty"),
    ("1e400Mbps,1ms", "bandwidth '1e400mbps' is too large to be finite; for no limit write 'unlimited'"),
    ("1e300Tbps", "bandwidth '1e300tbps' is too large to be finite"),
    ("infMbps", "is too large to be finite"),
    ("-5Mbps", "bandwidth '-5mbps' must be > 0"),
    ("0Mbps", "bandwidth '0mbps' must be > 0"),
    ("nanMbps", "bandwidth 'nanmbps' is not a number"),
    ("5Mbps,-1ms", "latency '-1ms' must be >= 0"),
    ("5Mbps,nanms", "latency 'nanms' is not a number"),
    ("5Mbps,1e400ms", "latency '1e400ms' is too large to be finite"),
    ("abcMbps", "'abc' is not a number"),
    ("5", "bandwidth '5' needs a number and a unit: bps, Kbps, Mbps, Gbps, Tbps"),
    ("Mbps", "needs a number and a unit"),
    ("5Mbps,1", "latency '1' needs a number and a unit: s, ms, us, ns"),
    ("5Mbps,", "expected BANDWIDTH[,LATENCY]"),
    ("5Mbps,1ms,2", "expected BANDWIDTH[,LATENCY]"),
])
def test_bad_links_say_what_is_wrong(text, reason):
    with pytest.raises(ValueError) as info:
        parse_link(text)
    assert str(info.value).startswith(f"Invalid link: {text!r} (") and reason in str(info.value), str(info.value)
    assert "needs a unit" not in str(info.value) or "needs a number and a unit" in reason


@pytest.mark.parametrize("text, bandwidth, latency", [
    ("500Mbps,1ms", 5e8, 1e-3), ("1Gbps", 1e9, 0.0), ("unlimited", math.inf, 0.0), ("unlimited,2ms", math.inf, 2e-3),
    ("1.5e3Kbps,0.5us", 1.5e6, 5e-7), ("10bps,0s", 10.0, 0.0),
])
def test_good_links(text, bandwidth, latency):
    assert parse_link(text) == LinkModel(bandwidth, latency)


def test_rounds_overlap_latency_not_bandwidth():
    from relaxtorch.comm import LinkModel
    link = LinkModel(1e6, 2e-3)
    assert link.seconds(1000, 4) == 4 * 2e-3 + 8000 / 1e6  # one after another
    assert link.seconds(1000, 4, rounds=2) == 2 * 2e-3 + 8000 / 1e6  # two rounds of two at once
    assert link.seconds(1000, 4, rounds=4) == link.seconds(1000, 4)
    assert link.seconds(0, 0, rounds=2) == 0.0
