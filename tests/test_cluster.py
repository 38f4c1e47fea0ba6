"""deploy / status / delete against a fake Kubernetes API server, through the real CLI and kubernetes client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakekube import FakeKube, fake_kube
from tests.local_helpers import knsd

SERVICES = "/apis/serving.knative.dev/v1/namespaces/{ns}/services"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeKube, list[str]]]:
    with fake_kube(tmp_path) as (fake, config):
        yield fake, ["--kubeconfig", str(config)]


def test_deploy_creates_waits_and_prints_the_url(cache: Path, cluster: tuple[FakeKube, list[str]]) -> None:
    fake, kc = cluster
    out = knsd(cache, "deploy", "--name", "sd", "--profile", "ack", *kc)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Creating service 'sd' in namespace 'default':"
    assert any(
        line.endswith('s Configuration "sd" is waiting for a Revision to become ready.') for line in lines
    )
    assert lines[-4].endswith("s Ready to serve.") and lines[-3] == ""
    assert lines[-2] == "Service 'sd' created to latest revision 'sd-00001' is available at URL:"
    assert lines[-1] == "http://sd.default.example.com"
    [(method, path, body)] = fake.bodies
    assert (method, path) == ("POST", SERVICES.format(ns="default"))
    assert body["kind"] == "Service" and body["spec"]["template"]["spec"]["containerConcurrency"] == 1
    assert body["metadata"]["annotations"]["serving.knative.dev.alibabacloud/affinity"] == "cookie"


def test_update_patches_the_existing_service(cache: Path, cluster: tuple[FakeKube, list[str]]) -> None:
    fake, kc = cluster
    assert knsd(cache, "deploy", "--name", "sd", *kc).returncode == 0
    out = knsd(cache, "deploy", "--name", "sd", "--scale-max", "4", *kc)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "Updating service 'sd' in namespace 'default':"
    assert "Service 'sd' updated to latest revision 'sd-00002' is available at URL:" in out.stdout
    method, path, patch = fake.bodies[-1]
    assert method == "PATCH" and path == SERVICES.format(ns="default") + "/sd"
    assert patch["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "4"
    assert fake.services[("default", "sd")]["metadata"]["generation"] == 2


def test_traffic_and_revision_name_are_declarative(cache: Path, cluster: tuple[FakeKube, list[str]]) -> None:
    fake, kc = cluster
    assert knsd(cache, "deploy", "--name", "sd", "--revision-name", "sd-v1", *kc).returncode == 0
    out = knsd(cache, "deploy", "--name", "sd", "--revision-name", "sd-v2", "--traffic", "sd-v1=90,@latest=10",
               "--tag", "@latest=canary", "--scale-max", "4", *kc)  # fmt: skip
    assert out.returncode == 0, out.stderr
    stored = fake.services[("default", "sd")]
    assert stored["spec"]["template"]["metadata"]["name"] == "sd-v2"
    assert stored["spec"]["traffic"] == [
        {"revisionName": "sd-v1", "latestRevision": False, "percent": 90},
        {"tag": "canary", "latestRevision": True, "percent": 10},
    ]
    # A plain deploy afterwards: back to Knative's defaults, not the old split and name.
    assert knsd(cache, "deploy", "--name", "sd", "--scale-max", "5", *kc).returncode == 0
    _, _, patch = fake.bodies[-1]
    assert patch["spec"]["traffic"] is None and patch["spec"]["template"]["metadata"]["name"] is None
    stored = fake.services[("default", "sd")]
    assert "traffic" not in stored["spec"] and "name" not in stored["spec"]["template"]["metadata"]


def test_no_wait_namespace_and_storage(cache: Path, cluster: tuple[FakeKube, list[str]]) -> None:
    fake, kc = cluster
    out = knsd(cache, "deploy", "--name", "painter", "-n", "gpu", "--model-pvc", "sd-models", "--model",
               "/models/v1-5-pruned-emaonly.safetensors", "--with-storage", "--no-wait", *kc)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "PersistentVolumeClaim 'sd-models': created." in out.stdout
    assert out.stdout.strip().endswith("Service 'painter' created in namespace 'gpu'.")
    assert "kubernetes.podspec-persistent-volume-claim" in out.stderr  # the warning, not an error
    assert ("gpu", "sd-models") in fake.pvcs and ("gpu", "painter") in fake.services


def test_dry_run_sends_nothing(cache: Path, cluster: tuple[FakeKube, list[str]]) -> None:
    fake, kc = cluster
    out = knsd(cache, "deploy", "--name", "sd", "--dry-run", *kc)
    assert out.returncode == 0
    doc = yaml.safe_load(out.stdout.split("\n", 1)[1])
    assert doc["kind"] == "Service" and doc["metadata"]["name"] == "sd"
    assert fake.requests == [] and fake.bodies == []


def test_status_in_kn_describe_layout_and_delete(cache: Path, cluster: tuple[FakeKube, list[str]]) -> None:
    fake, kc = cluster
    assert knsd(cache, "deploy", "--name", "sd", *kc).returncode == 0
    out = knsd(cache, "status", "sd", *kc)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert (
        "Name:       sd\nNamespace:  default\n" in text
        and "URL:        http://sd.default.example.com" in text
    )
    assert (
        "Revisions:\n  100%  @latest (sd-00001) [1]\n        Image:     knsd:latest\n        Replicas:  1/1"
        in text
    )
    assert "Conditions:\n  OK TYPE" in text and "  ++ Ready" in text
    assert "Pods:\n  sd-00001-deployment-5d9c8-abcde" in text and "ready" in text
    deleted = knsd(cache, "delete", "sd", *kc)
    assert (
        deleted.returncode == 0
        and deleted.stdout.strip() == "Service 'sd' successfully deleted in namespace 'default'."
    )
    assert ("default", "sd") not in fake.services
    again = knsd(cache, "delete", "sd", *kc)
    assert again.returncode == 2 and "service 'sd' not found in namespace 'default'" in again.stderr
    missing = knsd(cache, "status", "nope", *kc)
    assert missing.returncode == 2 and "service 'nope' not found" in missing.stderr


def test_failing_revision_shows_the_condition_and_the_pods(
    cache: Path, cluster: tuple[FakeKube, list[str]]
) -> None:
    fake, kc = cluster
    fake.image_pull_failure = True
    out = knsd(cache, "deploy", "--name", "sd", "--image", "registry.example/knsd:nope", *kc)
    assert out.returncode == 1
    assert "service 'sd' failed to become ready" in out.stderr
    assert (
        'RevisionFailed: Revision "sd-00001" failed with message: Unable to fetch image "registry.example/knsd:nope".'
        in out.stderr
    )
    assert 'ImagePullBackOff: Back-off pulling image "registry.example/knsd:nope"' in out.stderr


def test_wait_timeout_names_the_failing_condition(cache: Path, cluster: tuple[FakeKube, list[str]]) -> None:
    fake, kc = cluster
    fake.ready_delay = 30
    out = knsd(cache, "deploy", "--name", "sd", "--wait-timeout", "1", *kc)
    assert out.returncode == 1
    assert "timeout: service 'sd' not ready after 1 seconds" in out.stderr
    assert 'RevisionMissing: Configuration "sd" is waiting for a Revision to become ready.' in out.stderr


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda f: setattr(f, "knative_installed", False), "Knative Serving is not installed"),
        (lambda f: f.forbidden.add("get"), 'Forbidden: cannot get services.serving.knative.dev in namespace \'default\': services.serving.knative.dev is forbidden: User "tester" cannot get'),
        (lambda f: f.forbidden.add("create"), "Forbidden: cannot create services.serving.knative.dev"),
        (lambda f: setattr(f, "webhook_rejection", "must not set the field(s): spec.template.spec.nodeSelector"),
         'Knative rejected the Service: admission webhook "validation.webhook.serving.knative.dev" denied the request: '
         "validation failed: must not set the field(s): spec.template.spec.nodeSelector"),
    ],
)  # fmt: skip
def test_api_errors_are_clear(cache: Path, cluster: tuple[FakeKube, list[str]], setup, message: str) -> None:
    fake, kc = cluster
    setup(fake)
    out = knsd(cache, "deploy", "--name", "sd", *kc)
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_no_kubeconfig_and_unreachable_server(cache: Path, tmp_path: Path) -> None:
    out = knsd(cache, "deploy", "--name", "sd", "--kubeconfig", str(tmp_path / "missing"))
    assert out.returncode == 1 and "cannot use kubeconfig" in out.stderr
    from tests.fakekube import kubeconfig

    dead = kubeconfig(tmp_path / "dead", "http://127.0.0.1:1")
    out = knsd(cache, "status", "sd", "--kubeconfig", str(dead))
    assert out.returncode == 1 and "cannot reach the Kubernetes API server" in out.stderr


def test_invalid_spec_never_reaches_the_cluster(cache: Path, cluster: tuple[FakeKube, list[str]]) -> None:
    fake, kc = cluster
    out = knsd(cache, "deploy", "--name", "sd", "--scale-min", "5", "--scale-max", "2", *kc)
    assert out.returncode == 2
    assert "max-scale=2 is less than min-scale=5" in out.stderr
    assert fake.requests == []
