"""`import micro3diff` before torch turns on PyTorch's transparent-huge-page allocation (THP_MEM_ALLOC_ENABLE)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
CHILD = """
import micro3diff, torch
t = torch.ones(16 * 2**20)  # 64 MiB, touched
print(sum(int(line.split()[1]) for line in open("/proc/self/smaps") if line.startswith("AnonHugePages:")))
"""


def _huge_kib(env: dict) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not MODE.is_file() or "[madvise]" not in MODE.read_text(),
                    reason="needs Linux transparent huge pages in madvise mode (else the setting changes nothing)")
def test_import_turns_on_huge_pages_unless_opted_out():
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    assert _huge_kib(env) >= 32 * 1024
    assert _huge_kib({**env, "THP_MEM_ALLOC_ENABLE": "0"}) == 0
