"""`knsd loadtest`: hey's flags and report, plus scale-out verification."""

from __future__ import annotations

import sys

import typer

from knsd.cli.common import cli_errors
from knsd.errors import UsageError
from knsd.loadtest.spec import USAGE, LoadSpec, parse_args


def loadtest(ctx: typer.Context) -> None:
    """Send load like hey does and report like hey does; with --service/--local, verify scale-out."""
    args = list(ctx.args)
    with cli_errors("loadtest"):
        try:
            spec = parse_args(args)
        except UsageError as exc:
            if exc.flag == "-h":
                typer.echo(USAGE)
                raise typer.Exit(0) from None
            typer.echo(f"knsd loadtest: error: {exc}\n\n{USAGE}", err=True)
            raise typer.Exit(2) from None
        if spec.async_jobs:
            _jobs(spec)
            return
        from knsd.loadtest.output import hey_csv, hey_text, report_json, scale_text
        from knsd.loadtest.run import execute

        outcome = execute(spec)
        if spec.output == "csv":
            sys.stdout.write(hey_csv(outcome.run))
        elif spec.output == "json":
            sys.stdout.write(report_json(outcome.summary, outcome.run, outcome.scale) + "\n")
        else:
            sys.stdout.write(hey_text(outcome.summary))
            if outcome.scale is not None:
                sys.stdout.write(scale_text(outcome.scale))
        sys.stdout.flush()
        if spec.plot is not None:
            from knsd.loadtest.plot import plot_run

            plot_run(spec.plot, outcome.run, outcome.scale, f"knsd loadtest {spec.method} {spec.url}")
            typer.echo(f"plot written to {spec.plot}", err=True)
        if outcome.scale is not None and outcome.scale.failures:
            for failure in outcome.scale.failures:
                typer.echo(f"knsd loadtest: scale-out check failed: {failure}", err=True)
            raise typer.Exit(1)


def _jobs(spec: LoadSpec) -> None:
    """--async: the jobs' report; exit 1 when an accepted job was lost."""
    from knsd.loadtest.jobreport import jobs_json, jobs_text, summarize_jobs
    from knsd.loadtest.jobs import execute_jobs

    run = execute_jobs(spec)
    summary = summarize_jobs(run)
    sys.stdout.write(jobs_json(summary, run) + "\n" if spec.output == "json" else jobs_text(summary))
    sys.stdout.flush()
    if summary.lost:
        typer.echo(f"knsd loadtest: {summary.lost} accepted job(s) lost", err=True)
        raise typer.Exit(1)
