"""The local runtime's control endpoints refuse strangers; status and metrics stay open."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from knsd.local.control import token_path
from knsd.local.state import ServiceDir
from tests.local_helpers import local_service, status

pytestmark = pytest.mark.slow


def test_update_and_shutdown_need_the_secret_from_the_state_dir(cache: Path) -> None:
    with local_service(
        cache, "guard", "--scale-init", "0", "--autoscaler-config", "allow-zero-initial-scale=true"
    ) as url:  # noqa: E501
        path = token_path(ServiceDir.for_name("guard", cache).root)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = path.read_text().strip()
        spec = status(url)["spec"]
        for what, body in (("shutdown", None), ("update", {"spec": spec})):
            none = httpx.post(f"{url}/.knsd/{what}", json=body)
            assert none.status_code == 401 and "control token" in none.json()["detail"]
            assert str(path.parent) not in none.text  # the answer may go to a stranger: no path in it
            wrong = httpx.post(f"{url}/.knsd/{what}", json=body, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 403 and wrong.json()["error"] == "Forbidden"
        # Still running, same revision; the read-only endpoints are open.
        st = status(url)
        assert st["latest_revision"] == "guard-00001" and len(st["revisions"]) == 1
        assert httpx.get(url + "/.knsd/metrics").status_code == 200
        ok = httpx.post(url + "/.knsd/shutdown", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json() == {"status": "stopping"}
