"""Run AUTOMATIC1111 v1.10.1's own API test suite (`test/`) against `knsd serve`, as A1111's CI runs it.

The suite is AGPL and is never copied into this repository: it is read from a local git mirror of A1111
(`--mirror`, default the path in $A1111_MIRROR) at commit 82a973c0 (v1.10.1) with `git archive` into a
temporary folder, and run there in its own virtual environment with what its CI installs
(requirements-test.txt: pytest~=7.3, pytest-base-url~=2.0; requests). The two files that import A1111 itself
(test_face_restorers.py, test_torch_utils.py) cannot run over HTTP and are left out, as the issue says.

    python loadtest/a1111_suite.py [--model tiny] [--mirror PATH]   (make a1111-suite)

Prints pytest's report and a last line "N passed, N failed"; exits 0 when it ran (whatever the counts),
2 when the mirror, git or the suite's packages are missing. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import venv
import xml.etree.ElementTree as ET
from pathlib import Path

COMMIT = "82a973c04367123ae98bd9abdf80d9eda9b910e2"  # v1.10.1
DEFAULT_MIRROR = "/work/.mirror/ussoewwin+A1111-for-Python3.12/repo"
IMPORTS_A1111 = ("test/test_face_restorers.py", "test/test_torch_utils.py")
SUITE_PACKAGES = ("pytest~=7.3", "pytest-base-url~=2.0", "requests", "pillow")
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _suite_venv(cache: Path) -> Path:
    """A venv with the suite's CI packages, built once under the knsd cache."""
    python = cache / "a1111-suite-venv" / "bin" / "python"
    if not python.exists():
        venv.create(python.parent.parent, with_pip=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *SUITE_PACKAGES], check=True)
    return python


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"knsd serve exited with {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit("knsd serve was not ready in time")


def _counts(junit: Path) -> tuple[int, int, int]:
    root = ET.parse(junit).getroot()
    cases = list(root.iter("testcase"))
    failed = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    return len(cases) - failed - skipped, failed, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="tiny", help="the model knsd serves (tiny, tiny-sdxl, a checkpoint)"
    )
    parser.add_argument(
        "--mirror", default=os.environ.get("A1111_MIRROR", DEFAULT_MIRROR), help="A1111 git mirror"
    )
    parser.add_argument("--cache", default=os.environ.get("KNSD_CACHE", str(Path.home() / ".cache" / "knsd")))
    args = parser.parse_args()
    mirror = Path(args.mirror)
    if shutil.which("git") is None or not mirror.exists():
        print(f"a1111-suite: no A1111 mirror at {mirror} (set A1111_MIRROR or --mirror); nothing run")
        return 2
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    python = _suite_venv(cache)
    with tempfile.TemporaryDirectory(prefix="knsd-a1111-suite-") as tmp:
        suite = Path(tmp)
        archive = subprocess.run(
            ["git", "-C", str(mirror), "archive", COMMIT, "test", "pyproject.toml"],
            check=True,
            capture_output=True,
        )
        subprocess.run(["tar", "-x", "-C", str(suite)], input=archive.stdout, check=True)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        knsd = [sys.executable, "-m", "knsd", "serve", "--model", args.model, "--host", "127.0.0.1"]
        log = open(suite / "knsd.log", "wb")  # noqa: SIM115 - the server writes to it until the end
        server = subprocess.Popen(
            [*knsd, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        try:
            _wait_ready(url, server)
            junit = suite / "results.xml"
            # A1111's CI: python -m pytest -vv --junitxml=test/results.xml --cov . --cov-report=xml
            # --verify-base-url test (coverage of A1111's own code dropped; base URL pointed at knsd)
            command = [
                str(python), "-m", "pytest", "-vv", "-p", "no:cacheprovider", f"--junitxml={junit}",
                "--base-url", url, "--verify-base-url", *(f"--ignore={f}" for f in IMPORTS_A1111), "test",
            ]  # fmt: skip
            subprocess.run(command, cwd=suite)
            passed, failed, skipped = _counts(junit)
        finally:
            server.terminate()
            server.wait(timeout=60)
            log.close()
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
