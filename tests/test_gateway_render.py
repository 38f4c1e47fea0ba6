"""`knsd render --gateway` and `knsd deploy --gateway`: the gateway's Deployment and Service, a Redis
StatefulSet with its PVC unless --redis-url, checked before anything is sent; created on a (fake) cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakekube import FakeKube, fake_kube
from tests.local_helpers import knsd


def _render(cache: Path, *flags: str) -> list[dict]:
    out = knsd(cache, "render", "--gateway", *flags)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _args(objects: list[dict]) -> list[str]:
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_gateway_redis_and_the_inflight_bound_from_the_service(cache: Path) -> None:
    objects = _render(cache, "--name", "art", "-n", "gpu", "--scale-max", "4", "--concurrency-limit", "2",
                      "--gateway-arg=--rate=*=5/s")  # fmt: skip
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [("Service", "art"), ("Deployment", "art-gateway"), ("Service", "art-gateway"),
                     ("StatefulSet", "art-redis"), ("Service", "art-redis")]  # fmt: skip
    args = _args(objects)
    flag = {
        args[i]: args[i + 1]
        for i in range(1, len(args) - 1)
        if args[i].startswith("--") and "=" not in args[i]
    }
    assert args[0] == "gateway" and "--rate=*=5/s" in args
    assert flag["--upstream"] == "http://art.gpu.svc.cluster.local"  # Knative's route, inside the cluster
    assert flag["--redis"] == "redis://art-redis.gpu.svc.cluster.local:6379/0"
    assert flag["--max-inflight"] == "8"  # max-scale 4 x containerConcurrency 2
    deployment, gateway_svc, redis, redis_svc = objects[1:]
    assert deployment["spec"]["replicas"] == 2 and deployment["metadata"]["namespace"] == "gpu"
    assert gateway_svc["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert "--appendonly" in container["args"] and "noeviction" in container["args"]
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert redis_svc["spec"]["clusterIP"] == "None"


def test_an_existing_redis_and_keys_from_a_secret(cache: Path) -> None:
    objects = _render(cache, "--redis-url", "rediss://:pw@cache.example:6380/2", "--gateway-keys-secret", "sd-keys",
                      "--gateway-replicas", "3", "--gateway-arg=--rate=alice=2/s")  # fmt: skip
    assert [o["kind"] for o in objects] == ["Service", "Deployment", "Service"]  # no Redis of its own
    args = _args(objects)
    assert args[args.index("--redis") + 1] == "rediss://:pw@cache.example:6380/2"
    assert args[args.index("--api-keys-file") + 1] == "/etc/knsd/api-keys"
    pod = objects[1]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "sd-keys" and objects[1]["spec"]["replicas"] == 3


def test_knsd_yaml_turns_the_gateway_on(cache: Path, tmp_path: Path) -> None:
    spec = tmp_path / "knsd.yaml"
    spec.write_text("name: sd\ngateway: true\nredis-storage: 5Gi\ngateway-args: ['--cache-max-mb=64']\n")
    out = knsd(cache, "render", "-f", str(spec))
    objects = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert "--cache-max-mb=64" in _args(objects)
    assert objects[3]["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "5Gi"


@pytest.mark.parametrize(
    ("flags", "flag", "words"),
    [
        (["--gateway-arg=--bogus"], "--gateway-arg", "No such option: --bogus"),
        (["--gateway-arg=--upstream=http://elsewhere"], "--gateway-arg", "set by knsd itself"),
        (["--gateway-arg=--rate=nobody=1/s"], "--gateway-arg", "no tenant 'nobody'"),
        (["--gateway-arg=--max-attempts=0"], "--gateway-arg", "--max-attempts"),
        (["--scale-max", "0"], "--gateway", "no in-flight bound"),
        (["--redis-storage", "1GB"], "--gateway", "'1GB' is not a quantity"),
        (["--gateway-replicas", "0"], "--gateway-replicas", "at least 1"),
        (["--gateway-keys-secret", "Not_A_Name"], "--gateway", "is not a valid name"),
    ],
)
def test_bad_gateway_settings_exit_2_naming_the_flag(
    cache: Path, flags: list[str], flag: str, words: str
) -> None:
    out = knsd(cache, "render", "--gateway", *flags)
    assert out.returncode == 2, out.stdout
    assert f"knsd render: error: {flag}" in out.stderr and words in out.stderr


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeKube, list[str]]]:
    with fake_kube(tmp_path) as (fake, config):
        yield fake, ["--kubeconfig", str(config)]


def test_deploy_creates_then_updates_the_gateway_and_redis(
    cache: Path, cluster: tuple[FakeKube, list[str]]
) -> None:
    fake, kc = cluster
    first = knsd(cache, "deploy", "--gateway", "--scale-max", "3", *kc)
    second = knsd(cache, "deploy", "--gateway", "--scale-max", "5", "--gateway-replicas", "1", *kc)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    for line in ("Deployment 'sd-gateway': created.", "Service 'sd-gateway': created.",
                 "StatefulSet 'sd-redis': created.", "Service 'sd-redis': created."):  # fmt: skip
        assert line in first.stdout
    assert "Deployment 'sd-gateway': updated." in second.stdout
    deployment = fake.objects[("deployments", "default", "sd-gateway")]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert deployment["spec"]["replicas"] == 1 and args[args.index("--max-inflight") + 1] == "5"
    patches = [b for m, p, b in fake.bodies if m == "PATCH" and "statefulsets" in p]
    assert patches and all("volumeClaimTemplates" not in b["spec"] for b in patches)  # immutable: not sent
