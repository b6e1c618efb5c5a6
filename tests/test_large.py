"""A 4000x3000 pair fuses on the CPU within 4 GB of RAM (tiled), measured in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_4000x3000_fuses_within_4gb_tiled():
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_fuse.py"), "--child", "--memory", "4000x3000",
           "--tile", "1024"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout)
    assert result["peak_rss_mib"] < 4096, result
