"""One-machine runs listen on 127.0.0.1 only (read back from the kernel's socket table)."""
import datetime
import sys

import pytest
import torch.distributed as dist

from relaxtorch.comm.loopback import HOST, loopback_interface, loopback_store


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} writes them) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table, encoding="ascii").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.append(addr)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
def test_store_listens_on_loopback_only_and_serves_clients():
    store = loopback_store(2, timeout=10)
    assert _listening(store.port) == ["0100007F"]  # 127.0.0.1, and no wildcard socket beside it
    client = dist.TCPStore(HOST, store.port, 2, is_master=False, timeout=datetime.timedelta(seconds=10))
    store.set("key", "value")
    assert client.get("key") == b"value"
    port = store.port
    del client, store
    assert _listening(port) == []  # the listening socket goes with the store


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux names it lo")
def test_loopback_interface_is_found():
    assert loopback_interface() == "lo"
