"""Helpers every node of the pack shares: the menu category and how engine errors reach the user.

ComfyUI 0.3.75 has no special exception type for node failures: whatever `execute` raises is shown as
`<exception type>: <message>` with the traceback of the raising frames. So a user-fixable
`AceStepError` is re-raised here with the node's name in front and without the engine's internal frames:
the message says what to change, and the type stays the readable `acestep_core.errors.AceStepError`
(not a custom-node module path, which ComfyUI derives from the pack's install folder).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
