"""Gray release on the local runtime: revisions kept while traffic names them, a percent split, tag routing,
Knative's K_* variables, the split in `knsd loadtest`'s report, and a rollout under load that loses nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.helpers import knsd_env
from tests.local_helpers import knsd, local_service, status, wait_until

# Several pods and deploys per test: generous limits for a busy machine (they take 1-3 minutes on an idle one).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SMALL = {"prompt": "x", "width": 64, "height": 64, "steps": 2}
KEEP = ["--scale-min", "1", "--scale-max", "1"]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_split_tags_and_knative_env(cache: Path) -> None:
    with local_service(cache, "gray", "--revision-name", "gray-v1", *KEEP) as url:
        address = url.removeprefix("http://")
        out = knsd(cache, "deploy", "--local", "--name", "gray", "--local-address", address, *KEEP,
                   "--revision-name", "gray-v2", "--env", "KNSD_VERSION=2", "--traffic", "gray-v1=50",
                   "--traffic", "@latest=50", "--tag", "@latest=canary", "--tag", "gray-v1=stable")  # fmt: skip
        assert out.returncode == 0, out.stderr
        st = status(url)
        assert st["traffic"] == [
            {"revisionName": "gray-v1", "percent": 50, "latestRevision": False, "tag": "stable"},
            {"revisionName": "gray-v2", "percent": 50, "latestRevision": True, "tag": "canary"},
        ]
        assert [r["name"] for r in st["revisions"]] == ["gray-v1", "gray-v2"]  # both kept, each with pods
        # Knative's variables in each pod, and `knsd serve` answers with its revision.
        for rev in st["revisions"]:
            pod = rev["pods"][0]
            env = _environ(pod["pid"])
            assert (env["K_SERVICE"], env["K_CONFIGURATION"], env["K_REVISION"]) == (
                "gray",
                "gray",
                rev["name"],
            )
            direct = httpx.post(pod["url"] + "/sdapi/v1/txt2img", json=SMALL, timeout=60)
            assert direct.headers["x-knsd-revision"] == rev["name"]
        # The tag header reaches its revision every time; an unknown tag falls through to the split.
        for tag, rev in (("canary", "gray-v2"), ("stable", "gray-v1")):
            seen = {
                httpx.post(url + "/sdapi/v1/txt2img", json=SMALL, headers={"Knative-Serving-Tag": tag},
                           timeout=60).headers["x-knsd-revision"]
                for _ in range(3)
            }  # fmt: skip
            assert seen == {rev}
        # The split, as `knsd loadtest` reports it.
        lt = knsd(cache, "loadtest", "-n", "10", "-c", "2", "-t", "0", "-m", "POST", "-T", "application/json",
                  "-d", json.dumps(SMALL), url + "/sdapi/v1/txt2img")  # fmt: skip
        assert lt.returncode == 0, lt.stderr
        assert (
            "Revision distribution:\n  gray-v1\t5 responses (50.0%): [200] 5\n  gray-v2\t5 responses (50.0%): [200] 5"
            in lt.stdout
        )  # noqa: E501
        metrics = httpx.get(url + "/.knsd/metrics").text
        for rev in ("gray-v1", "gray-v2"):  # a gray-release panel: requests by revision
            line = f'knsd_runtime_revision_requests_total{{code="200",revision="{rev}"}}'
            assert float(metrics.split(line, 1)[1].split()[0]) >= 8  # 5 from the load test, 3 tagged
        text = knsd(cache, "status", "gray", "--local").stdout
        assert "Traffic:\n   50%  gray-v1 #stable\n   50%  @latest (gray-v2) #canary" in text
        # All traffic back to v1 (a traffic-only update: no new revision); v2 stays while its tag names it.
        out = knsd(cache, "deploy", "--local", "--name", "gray", "--local-address", address, *KEEP,
                   "--env", "KNSD_VERSION=2", "--traffic", "gray-v1=100", "--tag", "gray-v2=canary")  # fmt: skip
        assert out.returncode == 0, out.stderr
        st = status(url)
        assert [r["name"] for r in st["revisions"]] == ["gray-v1", "gray-v2"]
        codes = Counter(
            httpx.post(url + "/sdapi/v1/txt2img", json=SMALL, timeout=60).headers["x-knsd-revision"]
            for _ in range(4)
        )
        assert codes == {"gray-v1": 4}
        bad = knsd(
            cache,
            "deploy",
            "--local",
            "--name",
            "gray",
            "--local-address",
            address,
            "--traffic",
            "gray-v9=100",
        )
        assert bad.returncode == 1 and 'Revision "gray-v9" referenced in traffic not found.' in bad.stderr


def test_rollout_under_load_loses_nothing(cache: Path) -> None:
    with local_service(cache, "roll", *KEEP) as url:
        address = url.removeprefix("http://")
        load = subprocess.Popen(
            [sys.executable, "-m", "knsd", "loadtest", "-z", "600s", "-c", "3", "-t", "120", "-m", "POST",
             "-T", "application/json", "-d", json.dumps(SMALL), "-o", "json", url + "/sdapi/v1/txt2img"],
            env=knsd_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(3)
        out = knsd(cache, "deploy", "--local", "--name", "roll", "--local-address", address, *KEEP,
                   "--env", "KNSD_VERSION=2")  # fmt: skip
        assert out.returncode == 0, out.stderr
        wait_until(lambda: [r["name"] for r in status(url)["revisions"]] == ["roll-00002"], 60, "v1 to drain")
        time.sleep(2)
        load.send_signal(signal.SIGINT)  # Ctrl-C: stop and report
        stdout, stderr = load.communicate(timeout=180)
        assert load.returncode == 0, stderr
        report = json.loads(stdout)
        assert report["errors"] == {}
        assert set(report["status_codes"]) == {"200"}
        assert set(report["revisions"]) == {"roll-00001", "roll-00002"}  # the load crossed the rollout
        old = status(url)["revisions"]
        assert all(p["state"] != "failed" for r in old for p in r["pod_history"])
