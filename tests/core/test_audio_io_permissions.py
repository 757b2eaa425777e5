"""Saved songs get ordinary file permissions, not the private mode of a temp file."""

import os

import torch

from acestep_core.audio_io import save_audio


def test_saved_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_audio(torch.zeros(2, 4800), 48000, tmp_path / "song.flac")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
