"""Browser tests: the web extension in the real ComfyUI frontend, in headless Chromium (see conftest.py)."""
