"""Take docs/dashboard.png: the dashboard after `mesh demo --keep`, in headless Chromium.

Run: `.venv/bin/python -m tests.dashboard_screenshot [PATH]` (default docs/dashboard.png).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.browser import Browser

ROOT = Path(__file__).resolve().parent.parent
MESH = [sys.executable, "-m", "drasill_cli"]


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else ROOT / "docs" / "dashboard.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRASILL_", "TMUX"))}
    demo = subprocess.run(
        [*MESH, "demo", "--keep", "--json"], env=env, capture_output=True, text=True, check=True
    )
    kept = Path(json.loads(demo.stdout)["kept"])
    served = subprocess.Popen(
        [*MESH, "--mesh-dir", str(kept), "dashboard", "--no-open", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = served.stdout.readline().strip() if served.stdout else ""
        with Browser() as chrome:
            chrome.get(url)
            chrome.wait("return document.getElementById('live').textContent === 'live'", 20)
            chrome.wait("return document.querySelectorAll('#board .task').length > 0")
            time.sleep(0.5)
            target.write_bytes(chrome.full_screenshot())
    finally:
        served.terminate()
        served.wait(10)
        if served.stdout is not None:
            served.stdout.close()
        shutil.rmtree(kept.parent, ignore_errors=True)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
