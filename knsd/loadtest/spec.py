"""The load test's typed spec, and hey's command line (Go `flag` semantics) parsed into it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from knsd.errors import UsageError
from knsd.knative.goconv import SECOND, DurationError, parse_duration

USAGE = """Usage: knsd loadtest [options...] <url>

hey's options (single or double dash; -n 10 or -n=10):
  -n  Number of requests to run. Default is 200.
  -c  Number of workers to run concurrently. Total number of requests cannot
      be smaller than the concurrency level. Default is 50.
  -q  Rate limit, in queries per second (QPS) per worker. Default is no rate limit.
  -z  Duration of application to send requests. When duration is reached,
      application stops and exits. If duration is specified, n is ignored.
      Examples: -z 10s -z 3m.
  -o  Output type: csv or json. If none provided, a summary is printed.
  -m  HTTP method, one of GET, POST, PUT, DELETE, HEAD, OPTIONS.
  -H  Custom HTTP header. You can specify as many as needed by repeating the flag.
      For example, -H "Accept: text/html" -H "Content-Type: application/xml" .
  -t  Timeout for each request in seconds. Default is 20, use 0 for infinite.
  -A  HTTP Accept header.
  -d  HTTP request body.
  -D  HTTP request body from file. For example, /home/user/file.txt or ./file.txt.
  -T  Content-type, defaults to "text/html".
  -U  User-Agent, defaults to version "hey/0.0.1".
  -a  Basic authentication, username:password.
  -x  HTTP Proxy address as host:port.
  -host                 HTTP Host header.
  -disable-compression  Disable compression.
  -disable-keepalive    Disable keep-alive, prevents re-use of TCP
                        connections between different HTTP requests.
  -disable-redirects    Disable following of HTTP redirects

knsd's options:
  --rate R              Open loop: R requests per second in total, sent on schedule whatever the
                        response times; latency from the intended send time (no coordinated omission).
  --service NAME        Watch the service's pods and report scale-out (Kubernetes: pods labelled
                        serving.knative.dev/service=NAME).
  --local               The service runs on the local runtime (knsd deploy --local).
  --namespace NS, --kubeconfig PATH, --context CTX   Cluster access for --service.
  --expect-pods N       Exit 1 unless at least N pods were ready at once.
  --expect-zero-after S Exit 1 unless the service is back to zero pods S seconds after the load.
  --plot FILE.png       Write a chart: ready pods over time, latency over time, latency histogram.
  --async               Through knsd gateway: submit jobs (Prefer: respond-async), follow each 202's
                        Location until the job is final; report job latency and lost jobs (exit 1).
  --poll S              How often a job is polled, seconds. Default is 0.5.
  --job-timeout S       A job not final this long after its submission is lost. Default is 600.
"""

VALUE_FLAGS = {"n", "c", "q", "z", "o", "m", "H", "t", "A", "d", "D", "T", "U", "a", "x", "host", "rate",
               "service", "namespace", "kubeconfig", "context", "expect-pods", "expect-zero-after", "cpus",
               "plot", "poll", "job-timeout"}  # fmt: skip
BOOL_FLAGS = {"disable-compression", "disable-keepalive", "disable-redirects", "local", "h2", "async"}
# hey's and knsd's flags that mean nothing for jobs: refused with --async rather than ignored.
NOT_ASYNC = ("x", "host", "disable-compression", "disable-keepalive", "disable-redirects", "plot", "service",
             "local", "expect-pods", "expect-zero-after")  # fmt: skip
HEADER = re.compile(r"^([\w-]+):\s*(.+)")
AUTH = re.compile(r"^(.+):([^\s].+)")


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """Everything one load test run needs."""

    url: str
    n: int = 200
    c: int = 50
    q: float = 0.0
    duration: float = 0.0  # -z, seconds; 0 = run -n requests
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 20.0  # 0 = none
    body: bytes = b""
    content_type: str = "text/html"
    user_agent: str = ""
    basic_auth: tuple[str, str] | None = None
    proxy: str | None = None
    host: str | None = None
    disable_compression: bool = False
    disable_keepalive: bool = False
    disable_redirects: bool = False
    output: str = ""  # "", "csv" or "json"
    rate: float = 0.0  # open loop, requests/s in total
    service: str | None = None
    local: bool = False
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    expect_pods: int | None = None
    expect_zero_after: float | None = None
    accept: str | None = None
    plot: Path | None = None  # --plot FILE.png
    async_jobs: bool = False  # --async: jobs through knsd gateway
    poll: float = 0.5
    job_timeout: float = 600.0

    @property
    def watching(self) -> bool:
        return self.service is not None or self.local

    def requests_per_worker(self) -> list[int]:
        """hey gives each worker n/c requests; knsd also hands out the remainder instead of dropping it."""
        base, rest = divmod(self.n, self.c)
        return [base + (1 if i < rest else 0) for i in range(self.c)]


def _split(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Go's flag package: -flag, --flag, -flag=value, -flag value; flags stop at the first non-flag."""
    values: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return values, argv[i + 1 :]
        if not arg.startswith("-") or arg == "-":
            return values, argv[i:]
        name, eq, value = arg.lstrip("-").partition("=")
        if name in ("h", "help"):
            raise UsageError("-h", "usage requested")
        if name in BOOL_FLAGS:
            if eq and value.lower() not in ("true", "false", "1", "0", "t", "f"):
                raise UsageError(f"-{name}", f"invalid boolean value {value!r}")
            values.setdefault(name, []).append("true" if not eq else value.lower())
        elif name in VALUE_FLAGS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"-{name}", "flag needs an argument")
                value = argv[i]
            values.setdefault(name, []).append(value)
        else:
            raise UsageError(f"-{name}", "flag provided but not defined (see knsd loadtest --help)")
        i += 1
    return values, []


def _int(values: dict[str, list[str]], name: str, default: int, lo: int) -> int:
    if name not in values:
        return default
    raw = values[name][-1]
    try:
        number = int(raw)
    except ValueError:
        raise UsageError(f"-{name}", f"expected an integer, got {raw!r}") from None
    if number < lo:
        raise UsageError(f"-{name}", f"must be at least {lo}, got {number}")
    return number


def _float(values: dict[str, list[str]], name: str, default: float, lo: float) -> float:
    if name not in values:
        return default
    raw = values[name][-1]
    try:
        number = float(raw)
    except ValueError:
        raise UsageError(f"-{name}", f"expected a number, got {raw!r}") from None
    if not number >= lo:
        raise UsageError(f"-{name}", f"must be at least {lo:g}, got {raw}")
    return number


def _duration(values: dict[str, list[str]], name: str) -> float:
    if name not in values:
        return 0.0
    raw = values[name][-1]
    try:
        ns = parse_duration(raw)
    except DurationError as exc:
        raise UsageError(f"-{name}", f"expected a duration such as 10s or 3m, got {raw!r} ({exc})") from None
    if ns < 0:
        raise UsageError(f"-{name}", f"must not be negative, got {raw}")
    return ns / SECOND


def _bool(values: dict[str, list[str]], name: str) -> bool:
    return values.get(name, ["false"])[-1] in ("true", "1", "t")


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("URL", f"expected an http:// or https:// URL with a host, got {url!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise UsageError("URL", f"invalid port in {url!r}: {exc}") from None
    return url


def parse_args(argv: list[str]) -> LoadSpec:
    """hey's flags (and knsd's) into a LoadSpec; any bad input is a UsageError naming the flag."""
    values, rest = _split(argv)
    if len(rest) != 1:
        raise UsageError("URL", "exactly one URL is required, after the options" if not rest else
                         f"exactly one URL after the options, got {len(rest)}: {' '.join(rest)}")  # fmt: skip
    url = _check_url(rest[0])
    n = _int(values, "n", 200, 1)
    c = _int(values, "c", 50, 1)
    duration = _duration(values, "z")
    if not duration and n < c:
        raise UsageError("-n", f"-n cannot be less than -c (got -n {n} -c {c})")
    headers = []
    for raw in values.get("H", []):
        match = HEADER.match(raw)
        if not match:
            raise UsageError(
                "-H", f"could not parse the provided input; input = {raw!r} (expected 'Name: value')"
            )
        headers.append((match.group(1), match.group(2)))
    body = values.get("d", [""])[-1].encode()
    if "D" in values:
        path = Path(values["D"][-1])
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise UsageError("-D", f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    auth = None
    if "a" in values:
        match = AUTH.match(values["a"][-1])
        if not match:
            raise UsageError("-a", "expected username:password")
        auth = (match.group(1), match.group(2))
    output = values.get("o", [""])[-1]
    if output not in ("", "csv", "json"):
        raise UsageError("-o", f"must be csv or json, got {output!r}")
    proxy = values.get("x", [None])[-1]
    if proxy is not None and "://" not in proxy:
        proxy = "http://" + proxy
    rate = _float(values, "rate", 0.0, 0.0)
    local = _bool(values, "local")
    service = values.get("service", [None])[-1]
    expect_pods = _int(values, "expect-pods", 0, 1) if "expect-pods" in values else None
    expect_zero = _float(values, "expect-zero-after", 0.0, 0.0) if "expect-zero-after" in values else None
    if (expect_pods is not None or expect_zero is not None) and not (local or service):
        raise UsageError("--expect-pods", "needs --service NAME or --local to watch the pods")
    async_jobs = _bool(values, "async")
    if async_jobs:
        for name in NOT_ASYNC:
            if name in values:
                raise UsageError(f"-{name}", "not with --async (jobs are followed by polling, not watched)")
        if values.get("m", ["POST"])[-1].upper() != "POST" or values.get("o", [""])[-1] == "csv":
            raise UsageError("--async", "jobs are submitted with -m POST and reported as text or -o json")
    elif "poll" in values or "job-timeout" in values:
        raise UsageError("--poll" if "poll" in values else "--job-timeout", "only with --async")
    return LoadSpec(
        url=url,
        n=n,
        c=c,
        q=_float(values, "q", 0.0, 0.0),
        duration=duration,
        method=values.get("m", ["POST" if async_jobs else "GET"])[-1].upper(),
        headers=tuple(headers),
        timeout=_float(values, "t", 20.0, 0.0),
        body=body,
        content_type=values.get("T", ["text/html"])[-1],
        user_agent=values.get("U", [""])[-1],
        basic_auth=auth,
        proxy=proxy,
        host=values.get("host", [None])[-1],
        disable_compression=_bool(values, "disable-compression"),
        disable_keepalive=_bool(values, "disable-keepalive"),
        disable_redirects=_bool(values, "disable-redirects"),
        output=output,
        rate=rate,
        service=service,
        local=local,
        namespace=values.get("namespace", [None])[-1],
        kubeconfig=values.get("kubeconfig", [None])[-1],
        context=values.get("context", [None])[-1],
        expect_pods=expect_pods,
        expect_zero_after=expect_zero,
        accept=values.get("A", [None])[-1],
        plot=_plot_path(values),
        async_jobs=async_jobs,
        poll=_float(values, "poll", 0.5, 0.01),
        job_timeout=_float(values, "job-timeout", 600.0, 0.001),
    )


def _plot_path(values: dict[str, list[str]]) -> Path | None:
    """--plot FILE.png: checked before the load runs, so a typo does not cost a whole test."""
    if "plot" not in values:
        return None
    path = Path(values["plot"][-1])
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError("--plot", f"expected a .png, .svg or .pdf file name, got {str(path)!r}")
    if not path.parent.is_dir():
        raise UsageError("--plot", f"the folder {str(path.parent)!r} does not exist")
    return path
