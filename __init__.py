"""ComfyUI entry point of comfyui-acestep.

ComfyUI imports this folder as a package and registers the nodes that `comfy_entrypoint()` (V3 schema)
returns; `WEB_DIRECTORY` serves `web/` (node help pages, frontend extensions). Outside ComfyUI (our own
pytest, the CLI) `comfy_api` is absent and this file only makes `acestep_core` importable.

Why the path line: `acestep_core` imports itself absolutely (`from acestep_core.x import ...`) so that it
works as a plain library; ComfyUI loads custom nodes by file path without adding their folder to
`sys.path`. Appending (not prepending) keeps ComfyUI's own modules, e.g. its top-level `nodes`, first.
"""

import sys
from pathlib import Path

WEB_DIRECTORY = "./web"

_PACK_ROOT = str(Path(__file__).resolve().parent)
if _PACK_ROOT not in sys.path:
    sys.path.append(_PACK_ROOT)

try:
    import comfy_api.latest  # noqa: F401  (present only inside ComfyUI)
except ImportError:
    _INSIDE_COMFYUI = False
else:
    _INSIDE_COMFYUI = True

if _INSIDE_COMFYUI:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
