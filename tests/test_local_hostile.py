"""The local runtime against a stranger who reaches its route: no secret in the open status, owner-only
state files, bodies held to the pods' limit, no renaming update, no filesystem path in an error."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from knsd.local.control import read_token
from knsd.local.redact import REDACTED, public_args, public_spec, public_url
from knsd.local.state import ServiceDir
from knsd.service.limits import MAX_BODY_BYTES
from knsd.service.spec import ServiceSpec
from tests.local_helpers import local_service, status

NAME = "hostile"
API_TOKEN = "tok-3f9c1d-never-shown"  # the pods' own `knsd serve --api-token`, from the spec's environment
PLAIN = "plain-value-7a1e"


@pytest.fixture(scope="module")
def service(cache: Path) -> Iterator[str]:
    """One pod that is up; started with the usual umask, so files not created 0600 would be 0644."""
    old = os.umask(0o022)
    try:
        with local_service(
            cache, NAME, "--scale-min", "1", "--scale-max", "1",
            "--env", f"KNSD_API_TOKEN={API_TOKEN}", "--env", f"KNSD_TEST_PLAIN={PLAIN}",
        ) as url:  # fmt: skip
            yield url
    finally:
        os.umask(old)


def _token(cache: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {read_token(ServiceDir.for_name(NAME, cache).root)}"}


@pytest.mark.slow
def test_open_status_shows_env_names_but_no_value(service: str) -> None:
    text = httpx.get(service + "/.knsd/status", timeout=10).text
    assert API_TOKEN not in text and PLAIN not in text
    assert status(service)["spec"]["env"] == ["KNSD_API_TOKEN", "KNSD_TEST_PLAIN"]
    history = httpx.get(service + "/.knsd/history", timeout=10)  # the dashboard's other JSON
    assert history.status_code == 200 and API_TOKEN not in history.text


@pytest.mark.slow
def test_state_files_are_owner_only(service: str, cache: Path) -> None:
    root = ServiceDir.for_name(NAME, cache).root
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(root.parent.stat().st_mode) == 0o700
    assert API_TOKEN in (root / "state.json").read_text()  # why it must be private
    files = [root / "state.json", root / "control.token", root / "runtime.pid", root / "runtime.log"]
    files += sorted((root / "pods").glob("*.log"))
    assert len(files) > 4  # a pod log too
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    assert modes == dict.fromkeys(modes, 0o600)


@pytest.mark.slow
def test_body_over_the_pods_limit_is_413_from_the_route_and_one_at_it_reaches_the_pod(
    service: str, cache: Path
) -> None:
    prefix, suffix = b'{"image": "', b'"}'
    body = prefix + b"A" * (MAX_BODY_BYTES - len(prefix) - len(suffix)) + suffix
    assert len(body) == MAX_BODY_BYTES
    headers = {**_token(cache), "Content-Type": "application/json"}
    at = httpx.post(service + "/sdapi/v1/png-info", content=body, headers=headers, timeout=120)
    assert at.headers.get("x-knsd-pod", "").startswith(f"{NAME}-00001-")  # passed on, answered by the pod
    assert at.status_code != 413
    over = body + b" "
    declared = httpx.post(service + "/sdapi/v1/png-info", content=over, timeout=60)
    assert declared.status_code == 413 and "x-knsd-pod" not in declared.headers  # not the pod's 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        for _ in range(MAX_BODY_BYTES // (1 << 20)):
            yield b"x" * (1 << 20)
        yield b"x"

    chunked = httpx.post(service + "/sdapi/v1/png-info", content=chunks(), timeout=60)
    assert chunked.status_code == 413 and "x-knsd-pod" not in chunked.headers
    assert chunked.json()["error"] == "PayloadTooLarge"


@pytest.mark.slow
def test_declared_oversized_body_is_refused_before_it_is_sent(service: str) -> None:
    address = urlsplit(service)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(
            b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n{{".encode()
        )
        head = sock.recv(4096)  # the route would wait here for the rest of a body it meant to read
    assert head.startswith(b"HTTP/1.1 413")


@pytest.mark.slow
def test_update_naming_another_service_is_refused(service: str, cache: Path) -> None:
    spec = ServiceSpec(name="renamed", scale_min=1, scale_max=1).to_json()
    r = httpx.post(service + "/.knsd/update", json={"spec": spec}, headers=_token(cache), timeout=30)
    assert r.status_code == 409 and r.json()["field"] == "metadata.name"
    assert "metadata.name" in r.json()["detail"] and "renamed" in r.json()["detail"]
    st = status(service)
    assert st["name"] == NAME and [rev["name"] for rev in st["revisions"]] == [f"{NAME}-00001"]


@pytest.mark.slow
def test_refused_control_calls_name_no_path(service: str, cache: Path) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.post(service + "/.knsd/shutdown", headers=headers, timeout=10)
        assert r.status_code in (401, 403) and "control token" in r.json()["detail"]
        assert str(cache) not in r.text and "control.token" not in r.text and "/local/" not in r.text
    assert status(service)["name"] == NAME  # still running


def test_public_spec_hides_values_of_secret_looking_fields_flags_and_url_passwords() -> None:
    spec = ServiceSpec(
        env=(("HF_TOKEN", "hf_abc"),),
        annotations=(("example.com/api-key", "k1"), ("example.com/team", "ml")),
        gateway_args=(
            "--api-key",
            "alice=k2",
            "--api-key=bob=k3",
            "--upstream-header=X-A=k4",
            "--rate=*=5/s",
        ),
        gateway_keys_secret="keys",
        redis_url="redis://user:k5@redis:6379/0",
    )
    shown = public_spec(spec.to_json())
    text = repr(shown)
    assert not any(secret in text for secret in ("hf_abc", "k1", "k2", "k3", "k4", "k5"))
    assert shown["env"] == ["HF_TOKEN"] and ["example.com/team", "ml"] in shown["annotations"]
    assert shown["gateway_args"][-1] == "--rate=*=5/s" and shown["gateway_keys_secret"] == REDACTED
    assert shown["redis_url"] == f"redis://user:{REDACTED}@redis:6379/0"
    assert public_args(["--api-key", "--rate=*=1/s"]) == ["--api-key", "--rate=*=1/s"]
    assert public_url("unix:///tmp/redis.sock") == "unix:///tmp/redis.sock"
