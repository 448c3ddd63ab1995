"""Small helpers for writing TOML in tests."""

import json


def _inline(value) -> str:
    """A TOML inline value (JSON strings are valid TOML basic strings for these paths)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_inline(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)
