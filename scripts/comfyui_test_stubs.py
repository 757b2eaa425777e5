"""Import-only stand-ins for torchvision and torchaudio, for the test ComfyUI only (never shipped).

Why: ComfyUI 0.3.75 imports torchvision at start-up and its core audio nodes import torchaudio at module
top, but no PyPI build of either loads against our CPU torch (shared/spec/comfyui.md §6.1). The
stand-ins make those imports succeed; anything real fails loudly on use, except
`torchaudio.functional.resample`, which core audio nodes need and scipy provides.

transformers (≥ 4.5x) imports a few torchvision names at module level as soon as it finds the package
and Pillow (`transforms.InterpolationMode`, `transforms.functional.pil_to_tensor`, `transforms.v2.functional`,
`io`), e.g. on the way to `Qwen3Model`; the stand-in provides those names (the function raises on use).
"""

from __future__ import annotations

from pathlib import Path

_RAISE_ON_USE = '''
def __getattr__(name):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    raise ImportError(f"{__name__}.{name} is not available in this test environment (stand-in package)")
'''

_TORCHVISION = '''"""Stand-in torchvision for tests: importable, nothing usable."""
import importlib

__version__ = "0.0.0+stub"


def __getattr__(name):
    if name in ("transforms", "models", "io"):
        return importlib.import_module(f"{__name__}.{name}")
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    raise ImportError(f"torchvision.{name} is not available in this test environment (stand-in package)")
'''

_TORCHAUDIO = '''"""Stand-in torchaudio for tests: only functional.resample (scipy polyphase)."""
from . import functional

__version__ = "0.0.0+stub"
'''

_TORCHAUDIO_FUNCTIONAL = '''"""resample() only, band-limited polyphase through scipy, in float64 on the CPU."""
from math import gcd

import numpy
import scipy.signal
import torch


def resample(waveform, orig_freq, new_freq, **kwargs):
    orig_freq, new_freq = int(orig_freq), int(new_freq)
    if orig_freq == new_freq:
        return waveform
    g = gcd(orig_freq, new_freq)
    data = waveform.detach().to("cpu", torch.float64).numpy()
    out = scipy.signal.resample_poly(data, new_freq // g, orig_freq // g, axis=-1)
    return torch.from_numpy(numpy.ascontiguousarray(out)).to(device=waveform.device, dtype=waveform.dtype)
'''

_TRANSFORMS = '''"""Stand-in: InterpolationMode (imported by transformers); everything else raises on use."""
import enum

from . import functional, v2


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"
''' + _RAISE_ON_USE

_TRANSFORMS_FUNCTIONAL = '''"""Stand-in: pil_to_tensor (imported by transformers) raises when called, like everything else."""


def pil_to_tensor(picture):
    raise ImportError("torchvision.transforms.functional.pil_to_tensor is not available in this test environment")
''' + _RAISE_ON_USE

FILES = {
    "torchvision/__init__.py": _TORCHVISION,
    "torchvision/transforms/__init__.py": _TRANSFORMS,
    "torchvision/transforms/functional/__init__.py": _TRANSFORMS_FUNCTIONAL,
    "torchvision/transforms/v2/__init__.py": '"""Stand-in: raises on use."""\nfrom . import functional\n' + _RAISE_ON_USE,
    "torchvision/transforms/v2/functional/__init__.py": '"""Stand-in: raises on use."""\n' + _RAISE_ON_USE,
    "torchvision/io/__init__.py": '"""Stand-in: raises on use."""\n' + _RAISE_ON_USE,
    "torchvision/models/__init__.py": '"""Stand-in: raises on use."""\n' + _RAISE_ON_USE,
    "torchaudio/__init__.py": _TORCHAUDIO,
    "torchaudio/functional/__init__.py": _TORCHAUDIO_FUNCTIONAL,
    "torchaudio/transforms/__init__.py": '"""Stand-in: raises on use."""\n' + _RAISE_ON_USE,
}


def write_stubs(folder: Path) -> Path:
    """Write the stand-ins under `folder` (rewriting only what changed) and return it for PYTHONPATH."""
    for relative, text in FILES.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return folder
