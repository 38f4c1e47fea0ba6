"""hey's command line: flags as users type them, and clear errors (exit 2) for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from knsd.errors import UsageError
from knsd.loadtest.spec import parse_args
from tests.local_helpers import knsd


def test_hey_flags_single_and_double_dash(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"prompt": "pretty dog"}')
    spec = parse_args(
        ["-n", "50", "-c=5", "--q", "2", "-m", "post", "-H", "X-A: 1", "-H", "X-B:2", "-t", "180", "-D", str(body),
         "-T", "application/json", "-A", "text/plain", "-a", "user:pass", "-x", "127.0.0.1:3128", "-host", "sd.example",
         "-disable-keepalive", "-disable-compression=false", "-disable-redirects", "-o", "json", "http://h:8080/sdapi/v1/txt2img"]
    )  # fmt: skip
    assert (spec.n, spec.c, spec.q, spec.method, spec.timeout) == (50, 5, 2.0, "POST", 180.0)
    assert spec.headers == (("X-A", "1"), ("X-B", "2"))
    assert spec.body == b'{"prompt": "pretty dog"}' and spec.content_type == "application/json"
    assert spec.accept == "text/plain" and spec.basic_auth == ("user", "pass")
    assert spec.proxy == "http://127.0.0.1:3128" and spec.host == "sd.example"
    assert spec.disable_keepalive and not spec.disable_compression and spec.disable_redirects
    assert spec.output == "json" and spec.url == "http://h:8080/sdapi/v1/txt2img"


def test_defaults_and_remainder_distribution() -> None:
    spec = parse_args(["http://h/"])
    assert (spec.n, spec.c, spec.timeout, spec.method, spec.content_type) == (
        200,
        50,
        20.0,
        "GET",
        "text/html",
    )
    spec = parse_args(["-n", "10", "-c", "3", "http://h/"])
    assert spec.requests_per_worker() == [4, 3, 3]  # hey would send 9
    assert parse_args(["-z", "1m30s", "-n", "1", "-c", "5", "http://h/"]).duration == 90.0


@pytest.mark.parametrize(
    ("argv", "flag", "fragment"),
    [
        (["-n", "5", "-c", "10", "http://h/"], "-n", "-n cannot be less than -c"),
        (["-n", "-3", "http://h/"], "-n", "must be at least 1"),
        (["-c", "0", "http://h/"], "-c", "must be at least 1"),
        (["-q", "-1", "http://h/"], "-q", "must be at least 0"),
        (["-n", "ten", "http://h/"], "-n", "expected an integer"),
        (["-z", "soon", "http://h/"], "-z", "expected a duration"),
        (["-D", "/no/such/file", "http://h/"], "-D", "cannot read"),
        (["-H", "no colon here", "http://h/"], "-H", "could not parse"),
        (["-a", "nopassword", "http://h/"], "-a", "username:password"),
        (["-o", "xml", "http://h/"], "-o", "csv or json"),
        (["-bogus", "http://h/"], "-bogus", "flag provided but not defined"),
        (["-n"], "-n", "needs an argument"),
        ([], "URL", "exactly one URL"),
        (["ftp://h/"], "URL", "http:// or https://"),
        (["http://h:99999/"], "URL", "invalid port"),
        (["http://h/", "http://g/"], "URL", "got 2"),
        (["--expect-pods", "2", "http://h/"], "--expect-pods", "needs --service NAME or --local"),
    ],
)
def test_bad_input(argv: list[str], flag: str, fragment: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_args(argv)
    assert err.value.flag == flag and fragment in err.value.message


def test_cli_exit_codes(cache: Path) -> None:
    bad = knsd(cache, "loadtest", "-n", "1", "-c", "2", "http://127.0.0.1:1/")
    assert bad.returncode == 2 and "-n cannot be less than -c" in bad.stderr and "Usage:" in bad.stderr
    assert knsd(cache, "loadtest", "-unknown", "http://h/").returncode == 2
    helped = knsd(cache, "loadtest", "--help")
    assert helped.returncode == 0 and "-disable-keepalive" in helped.stdout
