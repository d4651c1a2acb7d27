"""The build and the ABI guard: what a user sees when the extension is missing, stale or cannot load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pykernels
from pykernels import _extension

ROOT = Path(__file__).resolve().parents[1]


def test_recorded_build_matches_this_torch():
    info = _extension.recorded_build_info()
    assert info is not None and info["torch_version"] == torch.__version__
    assert "cpu" in info["backends"]


def test_cuda_backend_built_wherever_a_gpu_is_visible():
    """A visible GPU with no CUDA kernels built is a broken install, not a skip."""
    if torch.cuda.is_available():
        assert "cuda" in _extension.recorded_build_info()["backends"]
        x = torch.ones(3, device="cuda")
        assert pykernels.dot(x, x).device.type == "cuda"


def test_torch_version_mismatch_names_both_versions_and_the_fix():
    with pytest.raises(ImportError) as excinfo:
        _extension.check_build_matches({"torch_version": "2.0.0"})
    message = str(excinfo.value)
    assert "torch 2.0.0" in message and f"torch {torch.__version__}" in message
    assert "pip install --no-build-isolation --force-reinstall --no-deps ." in message


def test_missing_build_names_the_fix():
    with pytest.raises(ImportError, match=r"compiled extension is missing.*--no-build-isolation"):
        _extension.check_build_matches(None)


def test_undefined_symbol_is_reported_as_an_abi_mismatch(monkeypatch):
    def broken_import():
        raise ImportError("pykernels/_C.abi3.so: undefined symbol: _ZN3c104impl3cow23materialize_cow_storageE")

    monkeypatch.setattr(_extension, "recorded_build_info", lambda: {"torch_version": torch.__version__})
    with pytest.raises(ImportError) as excinfo:
        _extension.load(broken_import)
    message = str(excinfo.value)
    assert "ABI mismatch" in message and "materialize_cow_storage" in message
    assert _extension.REBUILD_COMMAND in message


def test_setup_without_torch_says_how_to_build():
    """An isolated build (no torch in the build env) stops with one line naming --no-build-isolation."""
    code = (
        "import sys, runpy; sys.modules['torch'] = None; sys.argv = ['setup.py', '--version'];"
        "runpy.run_path('setup.py', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "pip install --no-build-isolation ." in result.stderr


def test_extension_is_one_abi3_module_without_libtorch_python():
    built = list(Path(pykernels.__file__).parent.glob("_C*.so"))
    assert len(built) == 1 and built[0].name == "_C.abi3.so"
    readelf = subprocess.run(["readelf", "-d", str(built[0])], capture_output=True, text=True)
    if readelf.returncode != 0:
        pytest.skip("readelf not available")
    assert "libtorch_python" not in readelf.stdout
