"""Helpers every node of the pack shares: the menu category and how engine errors reach the user.

ComfyUI 0.3.75 has no special exception type for node failures: whatever `execute` raises is shown as
`<exception type>: <message>` with the traceback of the raising frames. So a user-fixable
`AceStepError` is re-raised here with the node's name in front and without the engine's internal frames:
the message says what to change, and the type stays the readable `acestep_core.errors.AceStepError`
(not a custom-node module path, which ComfyUI derives from the pack's install folder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import comfy.model_management
import comfy.utils

from acestep_core.errors import AceStepError

CATEGORY = "audio/ACE-Step"


@contextmanager
def user_errors(node_name: str) -> Iterator[None]:
    """Turn an `AceStepError` raised inside the block into the node error the user sees.

    Other exceptions pass untouched: they are bugs, and their full traceback is what we need.
    """
    try:
        yield
    except AceStepError as exc:
        raise AceStepError(f"{node_name}: {exc}") from None


def progress_bar() -> Callable[[int, int], None]:
    """A ComfyUI progress bar for the running node, as the `(done, total)` callback the engine reports to.

    Each update also checks ComfyUI's interrupt flag (ComfyUI's progress hook does), so a bar updated
    once per step or window is also an interrupt point.
    """
    bar = comfy.utils.ProgressBar(1)

    def update(done: int, total: int) -> None:
        bar.update_absolute(done, total)

    return update


def stage_progress() -> Callable[[str, int, int], None]:
    """The same bar for engine calls that report `(stage, done, total)`; the stage name is not shown."""
    update = progress_bar()
    return lambda stage, done, total: update(done, total)


def interrupted() -> bool:
    """The engine's cancel check inside ComfyUI: raises ComfyUI's own interrupt exception when the user
    pressed Cancel, so the run ends as "interrupted" (not as an error); otherwise returns False."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    return False
