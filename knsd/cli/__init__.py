"""The `knsd` command line: Typer commands that parse flags, call a function, print and choose the exit code.

Only `knsd serve` imports torch and diffusers; every other command must start fast.
"""

from __future__ import annotations

import typer

from knsd.cli import bench as _bench
from knsd.cli import gateway as _gateway
from knsd.cli import loadtest as _loadtest
from knsd.cli import serve as _serve
from knsd.cli import service as _service
from knsd.cli import simulate as _simulate

app = typer.Typer(
    name="knsd",
    help="Stable Diffusion on Knative: serve, deploy, load-test and simulate a scale-to-zero GPU service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("serve")(_serve.serve)
app.command("render")(_service.render)
app.command("deploy")(_service.deploy)
app.command("status")(_service.status)
app.command("delete")(_service.delete)
app.command("simulate")(_simulate.simulate)
app.command("bench")(_bench.bench)
app.command("gateway")(_gateway.gateway)
app.command(
    "loadtest",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)(_loadtest.loadtest)


@app.callback()
def _root() -> None:
    """Stable Diffusion on Knative: serve, deploy, load-test and simulate a scale-to-zero GPU service."""


def main() -> None:
    """Entry point of the `knsd` console script."""
    app()
