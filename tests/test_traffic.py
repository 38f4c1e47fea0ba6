"""Traffic split, tags and revision names: kn's flags, the rendered spec.traffic, Knative's rules and wording."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from knsd.cli.service import traffic_lines
from knsd.cluster.describe import describe
from knsd.errors import UsageError
from knsd.knative.fielderror import render
from knsd.knative.trafficrules import traffic_errors
from knsd.knative.webhook import check_service
from knsd.service.render import render_service
from knsd.service.spec import ServiceSpec
from knsd.service.traffic import parse_tags, parse_traffic, targets, untag
from tests.helpers import knsd_env

DNS = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = knsd_env(Path(cwd or "/nonexistent-knsd-cache"))
    return subprocess.run(
        [sys.executable, "-m", "knsd", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def test_render_traffic_and_tags_as_kn_would_send_them() -> None:
    out = cli("render", "--name", "hello", "--revision-name", "hello-v2", "--traffic", "hello-v1=90",
              "--traffic", "@latest=10", "--tag", "@latest=canary", "--tag", "hello-v1=stable")  # fmt: skip
    assert out.returncode == 0, out.stderr
    svc = yaml.safe_load(out.stdout)
    assert svc["spec"]["template"]["metadata"]["name"] == "hello-v2"
    assert svc["spec"]["traffic"] == [
        {"tag": "stable", "revisionName": "hello-v1", "latestRevision": False, "percent": 90},
        {"tag": "canary", "latestRevision": True, "percent": 10},
    ]
    assert check_service(svc).ok  # the CRD schema and Knative's rules


def test_kn_semantics() -> None:
    assert parse_traffic(["50", "v1=30%,v2=20"]) == (("@latest", 50), ("v1", 30), ("v2", 20))
    # --tag alone means @latest=100; extra tags on one revision are 0 % targets; untagged 0 % go.
    assert targets((), (("@latest", "new"),)) == [{"tag": "new", "latestRevision": True, "percent": 100}]
    assert targets((("a", 100), ("b", 0)), (("a", "x"), ("a", "y"))) == [
        {"tag": "x", "revisionName": "a", "latestRevision": False, "percent": 100},
        {"tag": "y", "revisionName": "a", "latestRevision": False, "percent": 0},
    ]
    # A REF naming a tag means the tagged revision.
    assert targets((("canary", 100),), (("sd-v2", "canary"),)) == [
        {"tag": "canary", "revisionName": "sd-v2", "latestRevision": False, "percent": 100}
    ]
    assert targets((), ()) == []
    assert untag((("a", "x"), ("b", "y")), ["x"], "sd") == (("b", "y"),)


@pytest.mark.parametrize(
    ("call", "flag", "message"),
    [
        (lambda: parse_traffic(["a=b=c"]), "--traffic", "expecting the value format in value1=value2, given a=b=c"),
        (lambda: parse_traffic(["v1=abc"]), "--traffic",
         "error converting given abc to integer value for traffic distribution"),
        (lambda: parse_traffic(["v1=150"]), "--traffic",
         "invalid value for traffic percent 150, expected 0 <= percent <= 100"),
        (lambda: parse_traffic(["v1=60", "v2=50"]), "--traffic", "given traffic percents sum to 110, want <=100"),
        (lambda: parse_traffic(["v1=10", "v1=90"]), "--traffic",
         "repetition of revision reference v1 is not allowed, use only once with --traffic flag"),
        (lambda: parse_tags(["@latest=a", "@latest=b"]), "--tag",
         "repetition of identifier @latest is not allowed, use only once with --tag flag"),
        (lambda: untag((("a", "x"),), ["foo", "bar"], "svc"), "--untag",
         "tag(s) foo, bar not present for any revisions of service svc"),
    ],
)  # fmt: skip
def test_kn_errors(call: object, flag: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        call()  # type: ignore[operator]
    assert info.value.flag == flag and info.value.message == f"{flag}: {message}"


@pytest.mark.parametrize(
    ("traffic", "expected"),
    [
        ([{"latestRevision": True, "percent": 90}], "Traffic targets sum to 90, want 100: spec.traffic"),
        ([{"revisionName": "a", "percent": 101}, {"revisionName": "b", "percent": -1}],
         "Traffic targets sum to 100, want 100"),
        ([{"tag": "canary", "revisionName": "a", "percent": 50}, {"latestRevision": True, "percent": 50},
          {"tag": "canary", "revisionName": "b", "percent": 0}],
         'Multiple definitions for "canary": spec.traffic[0].tag, spec.traffic[2].tag'),
        ([{"tag": "Bad", "latestRevision": True, "percent": 100}],
         f"invalid value: not a DNS 1035 label: [{DNS}]: spec.traffic.tag[0]"),
        ([{"tag": "a" * 64, "latestRevision": True, "percent": 100}],
         "invalid value: not a DNS 1035 label: [must be no more than 63 characters]: spec.traffic.tag[0]"),
        ([{"revisionName": "hello-00001", "latestRevision": True, "percent": 100}],
         'may not set revisionName "hello-00001" when latestRevision is true: spec.traffic[0].latestRevision'),
        ([{"latestRevision": False, "percent": 100}],
         'may not set revisionName "" when latestRevision is false: spec.traffic[0].latestRevision'),
        ([{"configurationName": "x", "percent": 100}],
         "must not set the field(s): spec.traffic[0].configurationName"),
        ([{"revisionName": "-bad", "percent": 100}], 'invalid key name "-bad": spec.traffic[0].revisionName\nname part'),
        ([{"url": "http://x", "latestRevision": True, "percent": 100}], "must not set the field(s): spec.traffic[0].url"),
    ],
)  # fmt: skip
def test_knative_traffic_rules_and_wording(traffic: list[dict], expected: str) -> None:
    text = render(traffic_errors(traffic))
    if expected.startswith("Traffic targets sum to 100"):  # out of range, and the sum is still 100
        assert "expected 0 <= 101 <= 100: spec.traffic[0].percent" in text
        assert "expected 0 <= -1 <= 100: spec.traffic[1].percent" in text
        assert "Traffic targets sum" not in text
    else:
        assert expected in text


def test_revision_name_rules_exit_2_naming_the_flag() -> None:
    out = cli("render", "--name", "hello", "--revision-name", "v2")
    assert out.returncode == 2
    assert (
        '--revision-name: Knative would reject this Service:\ninvalid value: "v2" must have prefix "hello-": spec.template.metadata.name'
        in out.stderr
    )  # noqa: E501
    out = cli("render", "--name", "hello", "--revision-name", "hello_V2")
    assert out.returncode == 2 and "not a DNS 1035 label" in out.stderr
    out = cli("deploy", "--local", "--name", "hello", "--traffic", "hello-v1=80", "--traffic", "@latest=10")
    assert out.returncode == 2
    assert (
        "--traffic/--tag: Knative would reject this Service:\nTraffic targets sum to 90, want 100: spec.traffic"
        in out.stderr
    )  # noqa: E501


def test_knsd_yaml_carries_traffic(tmp_path: Path) -> None:
    (tmp_path / "knsd.yaml").write_text(
        "name: hello\nrevision-name: hello-v2\ntraffic: {hello-v1: 50, '@latest': 50}\ntags: ['@latest=canary']\n"
    )
    spec = ServiceSpec.from_json(
        {k.replace("-", "_"): v for k, v in yaml.safe_load((tmp_path / "knsd.yaml").read_text()).items()}
    )
    assert spec.traffic == (("hello-v1", 50), ("@latest", 50)) and spec.tags == (("@latest", "canary"),)
    assert ServiceSpec.from_json(spec.to_json()) == spec
    out = cli("render", "-f", "knsd.yaml", "--untag", "canary", "--tag", "hello-v1=old", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    traffic = yaml.safe_load(out.stdout)["spec"]["traffic"]
    assert traffic == [
        {"tag": "old", "revisionName": "hello-v1", "latestRevision": False, "percent": 50},
        {"latestRevision": True, "percent": 50},
    ]
    assert render_service(spec)["spec"]["template"]["metadata"]["name"] == "hello-v2"


def test_status_prints_traffic_as_kn_service_describe() -> None:
    svc = {
        "metadata": {"name": "hello", "namespace": "default", "generation": 2},
        "spec": {"template": {"spec": {"containers": [{"image": "knsd:2"}]}}},
        "status": {
            "url": "http://hello.default.example.com",
            "traffic": [
                {"revisionName": "hello-v2", "latestRevision": True, "percent": 90, "tag": "current"},
                {"revisionName": "hello-v1", "latestRevision": False, "percent": 10, "tag": "old"},
                {"revisionName": "hello-v1", "latestRevision": False, "percent": 0, "tag": "stable"},
            ],
        },
    }
    text = describe(svc, [])
    assert "   90%  @latest (hello-v2) #current [2]" in text
    assert "   10%  hello-v1 #old [2]" in text
    assert "     +  hello-v1 #stable [2]" in text  # kn: Ready with 0 %
    local = traffic_lines(
        {
            "traffic": [t for t in svc["status"]["traffic"]],
            "traffic_pending": 'Revision "x" is not yet ready.',
        }
    )
    assert local[2:5] == [
        "   90%  @latest (hello-v2) #current",
        "   10%  hello-v1 #old",
        "     +  hello-v1 #stable",
    ]
    assert local[5] == '  (not yet applied: Revision "x" is not yet ready.)'
