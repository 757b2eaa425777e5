"""ACE-Step 1.5 engine: networks, checkpoints, text encoding, sampling. Never imports ComfyUI."""

from acestep_core.errors import AceStepError

__all__ = ["AceStepError"]
