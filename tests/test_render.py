"""Rendering: each profile passes the CRD schema and Knative's rules; bad input is rejected as Knative would."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from knsd.errors import UsageError
from knsd.knative.webhook import check_service, schema_errors
from knsd.service.render import render_pvc, render_service, to_yaml
from knsd.service.spec import ServiceSpec
from tests.helpers import REPO
from tests.local_helpers import knsd

A = "autoscaling.knative.dev/"


@pytest.mark.parametrize("profile", ["generic", "ack", "tke"])
def test_profiles_pass_schema_and_rules(profile: str) -> None:
    obj = render_service(ServiceSpec(profile=profile))  # type: ignore[arg-type]
    findings = check_service(obj)
    assert findings.ok, findings.message()
    assert findings.warnings == []
    assert obj["spec"]["template"]["spec"]["containerConcurrency"] == 1


def test_ack_reproduces_alibabas_published_service() -> None:
    obj = render_service(ServiceSpec(profile="ack"))
    meta, template = obj["metadata"], obj["spec"]["template"]
    assert meta["annotations"] == {
        "serving.knative.dev.alibabacloud/affinity": "cookie",
        "serving.knative.dev.alibabacloud/cookie-name": "sd",
        "serving.knative.dev.alibabacloud/cookie-timeout": "1800",
    }
    ann = template["metadata"]["annotations"]
    assert ann[A + "class"] == "kpa.autoscaling.knative.dev" and ann[A + "max-scale"] == "10"
    assert ann[A + "target-utilization-percentage"] == "100"
    assert (
        ann["k8s.aliyun.com/eci-use-specs"]
        == "ecs.gn5-c4g1.xlarge,ecs.gn5i-c8g1.2xlarge,ecs.gn5-c8g1.2xlarge"
    )
    container = template["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http1", "containerPort": 7860}]
    assert container["resources"]["limits"] == {
        "nvidia.com/gpu": "1"
    }  # ECI needs it beside the instance type
    # knsd's HTTP readiness on /readyz instead of a bare TCP check that passes while loading
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz"}
    assert "tcpSocket" not in container["readinessProbe"]


def test_cloud_specific_resources() -> None:
    tke = render_service(ServiceSpec(profile="tke", qgpu_core=25, qgpu_memory=6))
    assert tke["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "tke.cloud.tencent.com/qgpu-core": "25",
        "tke.cloud.tencent.com/qgpu-memory": "6",
    }
    gen = render_service(
        ServiceSpec(gpu=2, requests=(("cpu", "4"), ("memory", "16Gi")), gpu_driver="tesla=535")
    )
    container = gen["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"nvidia.com/gpu": "2"},
    }
    assert (
        gen["spec"]["template"]["metadata"]["annotations"]["k8s.aliyun.com/eci-gpu-driver-version"]
        == "tesla=535"
    )


def test_model_volume_and_pvc() -> None:
    spec = ServiceSpec(
        model_pvc="sd-models", model="/models/v1-5-pruned-emaonly.safetensors", storage_class="nas"
    )
    pod = render_service(spec)["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "models", "persistentVolumeClaim": {"claimName": "sd-models", "readOnly": True}}
    ]
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/models"
    assert pod["containers"][0]["args"][-1] == "/models/v1-5-pruned-emaonly.safetensors"
    pvc = render_pvc(spec)
    assert pvc is not None and pvc["spec"]["storageClassName"] == "nas"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"


def test_output_is_deterministic_yaml() -> None:
    spec = ServiceSpec(profile="ack", annotations=(("b", "2"), ("a", "1")))
    first, second = to_yaml([render_service(spec)]), to_yaml([render_service(spec)])
    assert first == second
    doc = yaml.safe_load(first.split("\n", 1)[1])
    assert list(doc) == ["apiVersion", "kind", "metadata", "spec"]


def test_long_timeout_gets_an_explicit_response_start_timeout() -> None:
    pod = render_service(ServiceSpec(timeout=600))["spec"]["template"]["spec"]
    assert pod["timeoutSeconds"] == 600 and pod["responseStartTimeoutSeconds"] == 600
    assert check_service(render_service(ServiceSpec(timeout=600))).warnings == []


def test_stream_timeouts_default_to_the_request_timeout_and_are_checked() -> None:
    """Queued and unstreamed requests send nothing until done: both timers must cover the whole request."""
    pod = render_service(ServiceSpec())["spec"]["template"]["spec"]
    assert (pod["timeoutSeconds"], pod["responseStartTimeoutSeconds"], pod["idleTimeoutSeconds"]) == (
        300,
        300,
        300,
    )
    pod = render_service(ServiceSpec(timeout=600, idle_timeout=60))["spec"]["template"]["spec"]
    assert (pod["responseStartTimeoutSeconds"], pod["idleTimeoutSeconds"]) == (600, 60)
    with pytest.raises(UsageError, match="--idle-timeout.*at least 30"):
        ServiceSpec(idle_timeout=10)
    with pytest.raises(UsageError, match=r"--response-start-timeout.*request timeout \(300 s\), got 400"):
        ServiceSpec(response_start_timeout=400)
    warnings = check_service(render_service(ServiceSpec(timeout=600, response_start_timeout=120))).warnings
    assert any("responseStartTimeoutSeconds 120 below timeoutSeconds 600" in w for w in warnings)


def test_warnings() -> None:
    obj = render_service(ServiceSpec(scale_utilization=70, node_selector=(("gpu", "a10"),), tolerations=("nvidia.com/gpu:NoSchedule",),
                                     runtime_class="nvidia", model="/models/sd15", gpu=0))  # fmt: skip
    obj["spec"]["template"]["spec"]["timeoutSeconds"] = 500
    del obj["spec"]["template"]["spec"]["responseStartTimeoutSeconds"]
    warnings = "\n".join(check_service(obj, model="/models/sd15").warnings)
    assert "two pods" in warnings.replace("= 2 pods", "two pods") and "panic mode" in warnings
    assert "silent 504" in warnings
    for flag in ("podspec-nodeselector", "podspec-tolerations", "podspec-runtimeclassname"):
        assert flag in warnings
    assert "no GPU is requested" in warnings
    assert obj["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--annotation-service", "autoscaling.knative.dev/max-scale=3"],
         'invalid key name "autoscaling.knative.dev/max-scale": metadata.annotations\n'
         'autoscaling annotations must be put under "spec.template.metadata.annotations" to work'),
        (["--scale-window", "1s"], "expected 6s <= 1s <= 1h0m0s: spec.template.metadata.annotations.autoscaling.knative.dev/window"),
        (["--annotation", "autoscaling.knative.dev/min-scale=foo"], "invalid value: foo: spec.template.metadata.annotations.autoscaling.knative.dev/min-scale"),
        (["--timeout", "601"], "expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds"),
        (["--port", "8012"], "invalid value: 8012: spec.template.spec.containers[0].ports.containerPort"),
        (["--concurrency-limit", "1001"], "--concurrency-limit: must be between 0 and 1000, got 1001"),
        (["--profile", "gke"], "--profile: must be generic, ack or tke"),
        (["--qgpu-core", "7"], "--qgpu-core: must be 5-100 in steps of 5"),
        (["--with-storage"], "--with-storage: needs --model-pvc NAME"),
        (["--node-selector", "nokey"], "--node-selector: expected KEY=VALUE"),
        (["--autoscaler-config", "max-scale-limit=5"], "max-scale = 0, must be in [1, max-scale-limit(5)] range"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_knatives_wording(cache: Path, flags: list[str], message: str) -> None:
    out = knsd(cache, "render", *flags)
    assert out.returncode == 2, out.stdout
    assert message in out.stderr


def test_render_cli_to_file_and_from_a_spec_file(cache: Path, tmp_path: Path) -> None:
    spec_file = tmp_path / "knsd.yaml"
    spec_file.write_text("name: painter\nprofile: ack\nscale-max: 4\nenv: [[KNSD_LOG, debug]]\n")
    out = knsd(cache, "render", "-f", str(spec_file), "--scale-max", "6", "-o", str(tmp_path / "svc.yaml"))
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load((tmp_path / "svc.yaml").read_text())
    assert doc["metadata"]["name"] == "painter"
    assert (
        doc["spec"]["template"]["metadata"]["annotations"][A + "max-scale"] == "6"
    )  # the flag overrides the file
    assert doc["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "KNSD_LOG", "value": "debug"}]
    bad = tmp_path / "bad.yaml"
    bad.write_text("nme: typo\n")
    out = knsd(cache, "render", "-f", str(bad))
    assert out.returncode == 2 and "unknown spec keys: nme" in out.stderr


def _manifest_commands() -> list[list[str]]:
    text = (REPO / "Makefile").read_text()
    block = text.split("\nmanifests:", 1)[1].split("\n\n", 1)[0]
    return [shlex.split(line.strip())[1:] for line in block.splitlines() if "knsd render" in line]


def test_manifests_are_what_the_renderer_produces(cache: Path, tmp_path: Path) -> None:
    commands = _manifest_commands()
    assert len(commands) == 4
    for argv in commands:
        target = REPO / argv[argv.index("-o") + 1]
        fresh = tmp_path / target.name
        out = knsd(cache, *[str(fresh) if a == str(target.relative_to(REPO)) else a for a in argv])
        assert out.returncode == 0, out.stderr
        assert fresh.read_text() == target.read_text(), f"{target} is stale: run make manifests"
        for doc in yaml.safe_load_all(target.read_text()):
            if doc["kind"] == "Service":
                assert schema_errors(doc) == []


def test_render_help_is_fast_and_never_imports_torch(cache: Path) -> None:
    import subprocess
    import sys

    code = "import sys, knsd.cli; knsd.cli.app(['render', '--help'], standalone_mode=False); print(sorted(m for m in ('torch', 'diffusers', 'kubernetes') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and re.search(r"\[\]\s*$", out.stdout), out.stdout + out.stderr
