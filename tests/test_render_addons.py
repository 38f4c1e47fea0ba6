"""`knsd render` mounts the add-on folders: next to the model on its PVC, or PVCs of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from knsd.errors import UsageError
from knsd.knative.webhook import check_service, schema_errors
from knsd.service.render import render_service
from knsd.service.spec import ServiceSpec
from tests.local_helpers import knsd


def _container(spec: ServiceSpec) -> dict:  # type: ignore[type-arg]
    service = render_service(spec)
    assert schema_errors(service) == [] and check_service(service).errors == []
    return dict(service["spec"]["template"]["spec"]["containers"][0])


def test_default_folders_stay_on_the_model_volume() -> None:
    container = _container(ServiceSpec(model="/models/sd15.safetensors", model_pvc="models"))
    # Lora/, ControlNet/ and embeddings/ next to the checkpoint: the same PVC, no extra flags or mounts.
    assert not any(a.startswith("--lora") or a.endswith("-dir") for a in container["args"])
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/models"]


def test_separate_addon_pvcs_are_mounted_read_only_with_their_flags() -> None:
    spec = ServiceSpec(
        model="/models/sd15.safetensors",
        model_pvc="models",
        lora_pvc="loras",
        controlnet_pvc="controlnets",
        embeddings_pvc="embeddings",
        lora_overlap_steps=4,
    )
    container = _container(spec)
    args = container["args"]
    assert args[args.index("--lora-dir") + 1] == "/addons/Lora"
    assert args[args.index("--controlnet-dir") + 1] == "/addons/ControlNet"
    assert args[args.index("--embeddings-dir") + 1] == "/addons/embeddings"
    assert args[args.index("--lora-overlap-steps") + 1] == "4"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/models", "/addons/Lora", "/addons/ControlNet", "/addons/embeddings"}
    assert all(m["readOnly"] for m in mounts.values())
    volumes = render_service(spec)["spec"]["template"]["spec"]["volumes"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in volumes}
    assert claims == {
        "models": "models",
        "addons-lora": "loras",
        "addons-controlnet": "controlnets",
        "addons-embeddings": "embeddings",
    }


def test_overlap_steps_out_of_range_names_the_flag(cache: Path) -> None:
    with pytest.raises(UsageError, match="--lora-overlap-steps"):
        ServiceSpec(lora_overlap_steps=151)
    result = knsd(cache, "render", "--lora-pvc", "loras", "--lora-overlap-steps", "2")
    assert result.returncode == 0, result.stderr
    assert "--lora-dir" in result.stdout and "claimName: loras" in result.stdout
