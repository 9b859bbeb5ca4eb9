"""The client side is a layer of its own: importing it loads nothing of the server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER_LIBRARIES = ("starlette", "uvicorn", "environs")
SHARED = ("presales_ws", "presales_ws.protocol", "presales_ws.audio")  # the wire and audio formats both speak


@pytest.mark.parametrize("module", ["presales_ws.client", "presales_ws.cli"])
def test_the_client_side_loads_no_server_module_or_library(module: str) -> None:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = json.loads(result.stdout)
    assert [m for m in loaded if m.split(".")[0] in SERVER_LIBRARIES] == []
    ours = [m for m in loaded if m.split(".")[0] == "presales_ws"]
    assert [m for m in ours if m not in (*SHARED, module) and not m.startswith("presales_ws.client")] == []
