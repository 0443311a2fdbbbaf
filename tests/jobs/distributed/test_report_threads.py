"""Describing the machine in a report must not change the rank's torch threads."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_machine_keeps_torch_threads():
    """In a fresh process (numba's threading layer not yet started, as on a rank): one torch
    thread before the report's machine description, one after; the numba count is reported."""
    code = textwrap.dedent("""
        import torch
        torch.set_num_threads(1)
        from relaxtorch.jobs._report import machine
        info = machine()
        assert torch.get_num_threads() == 1, torch.get_num_threads()
        assert info["numba_threads"] >= 1 and info["torch_threads"] == 1
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
