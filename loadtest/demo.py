"""`make demo`: the whole system on one machine, from zero to 3 pods and back to zero.

Deploys the tiny model on the local runtime (max-scale 3, initial-scale 0), then one `knsd loadtest`
drives 3 concurrent clients, watches the pods, verifies the scale-out (3 pods) and the return to zero,
and prints hey's report with a Scale-out section. The service is deleted at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from knsd.cache import cache_dir

NAME = "sd-demo"
ADDRESS = os.environ.get("KNSD_DEMO_ADDRESS", "127.0.0.1:8080")
URL = f"http://{ADDRESS}"
# The load test's chart (pods, latency over time, histogram); not in the repository (*.png is ignored).
PLOT = Path(os.environ.get("KNSD_DEMO_PLOT") or cache_dir() / "demo" / "loadtest.png")
KNSD = [sys.executable, "-m", "knsd"]
DEPLOY = [
    "deploy", "--local", "--name", NAME, "--local-address", ADDRESS,
    "--scale-max", "3", "--scale-init", "0", "--scale-window", "20s",
    "--autoscaler-config", "allow-zero-initial-scale=true",
    "--autoscaler-config", "scale-to-zero-grace-period=10s",
]  # fmt: skip
LOAD = [
    "loadtest", "-z", "30s", "-c", "3", "-t", "120", "-m", "POST", "-T", "application/json",
    "-d", '{"prompt": "pretty dog", "width": 256, "height": 256, "steps": 20}',
    "--local", "--expect-pods", "3", "--expect-zero-after", "90", "--plot", str(PLOT), f"{URL}/sdapi/v1/txt2img",
]  # fmt: skip


def knsd(*args: str, check: bool = True) -> int:
    shown = " ".join(a if " " not in a else f"'{a}'" for a in args)
    print(f"\n$ knsd {shown}", flush=True)
    return subprocess.run([*KNSD, *args], check=check).returncode


def main() -> int:
    subprocess.run([*KNSD, "delete", NAME, "--local"], capture_output=True)
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    knsd(*DEPLOY)
    try:
        print(
            f"\nWatch it live in a browser: {URL}/.knsd/ (the runtime's dashboard); {URL}/ is the generator."
        )
        print("\nThe service starts at zero pods. 3 clients now send txt2img requests back to back for 30 s;")
        print("each pod takes one request at a time, so Knative's autoscaler must scale out to 3 pods, then")
        print("back to zero once the load stops (stable window 20 s, grace period 10 s).", flush=True)
        code = knsd(*LOAD, check=False)
        print(
            "\nScale-out verified: 0 -> 3 pods -> 0." if code == 0 else "\nScale-out check FAILED.",
            flush=True,
        )
        if PLOT.exists():
            print(f"Plot of the run (ready pods, latency over time, latency histogram): {PLOT}", flush=True)
        return code
    finally:
        knsd("delete", NAME, "--local")


if __name__ == "__main__":
    sys.exit(main())
