"""Integration tests: the pack inside a real ComfyUI server (see conftest.py)."""
