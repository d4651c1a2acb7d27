"""The study's filter of torch's profiler noise on standard error (``gram._stderr_without``), at the file-descriptor
level where C++ writes, whatever Python's ``sys.stderr`` is."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, io, os, sys
from pykernels.study.gram import _stderr_without

def from_c(text):  # as torch's C++ profiler writes: to file descriptor 2, past Python's sys.stderr
    ctypes.CDLL(None).write(2, text.encode(), len(text))

mode = sys.argv[1]
if mode == "stringio":
    sys.stderr = io.StringIO()
elif mode == "none":
    sys.stderr = None
elif mode == "closed-fd":
    os.close(2)
with _stderr_without("USDT:"):
    from_c("USDT:2026 SyncActivityProfilerHandler.cpp:52] profiler_start\\nkept from C\\n")
    if mode == "plain":
        print("kept from Python", file=sys.stderr)
print("done")
"""


@pytest.mark.parametrize(
    ("mode", "expected_stderr"),
    [
        ("plain", "kept from C\nkept from Python\n"),
        ("stringio", "kept from C\n"),
        ("none", "kept from C\n"),
        ("closed-fd", ""),
    ],
)
def test_profiler_lines_are_dropped_and_the_rest_kept(mode, expected_stderr):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120, check=False
    )
    assert (result.returncode, result.stdout) == (0, "done\n"), result.stderr
    assert sorted(result.stderr.splitlines()) == sorted(expected_stderr.splitlines())
