"""The `qwenscribe models` and `qwenscribe doctor` commands, added to the main typer app by
`register(app, friendly_errors)` (called from `qwenscribe.cli`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from qwenscribe.cli_common import DecoderQuantsOption, EncoderPrecisionsOption, stderr, stdout

_STATUS = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red")}


def _mib(count: int) -> str:
    return f"{count / 2**20:,.1f}"


def _print_cache(summary: dict[str, Any]) -> None:
    known = Table(title="known models")
    for column in ("name", "hub id", "what"):
        known.add_column(column)
    for model in summary["known"]:
        known.add_row(model["name"], model["hub_id"], model["what"])
    stdout.print(known)

    downloaded = Table(title="downloaded checkpoints")
    downloaded.add_column("hub id")
    downloaded.add_column("MiB", justify="right")
    downloaded.add_column("path")
    for model in summary["downloaded"]:
        downloaded.add_row(model["hub_id"], _mib(model["bytes"]), model["path"] or "(empty)")
    if summary["downloaded"]:
        stdout.print(downloaded)
    else:
        stdout.print("downloaded checkpoints: none")

    converted = Table(title="converted for the hybrid runtime")
    for column in ("folder", "kind", "size", "encoder", "decoder", "MiB", "source"):
        converted.add_column(column, justify="right" if column == "MiB" else "left")
    for model in summary["converted"]:
        converted.add_row(
            model["path"].rsplit("/", 1)[-1],
            model["kind"],
            model["size"],
            ", ".join(model["encoder_precisions"]),
            ", ".join(model["decoder_quants"]),
            _mib(model["bytes"]),
            model["source"],
        )
    if summary["converted"]:
        stdout.print(converted)
    else:
        stdout.print("converted models: none")
    packed = summary["prepacked"]
    if packed["copies"]:
        stdout.print(
            Text(
                f"weights packed for this CPU: {packed['copies']} graphs, "
                f"{_mib(packed['bytes'])} MiB in {packed['path']} (made again when needed; "
                "safe to delete)"
            )
        )
    stdout.print(Text(f"cache: {summary['cache']} (set QWENSCRIBE_HOME to move it)"))


def register(app: typer.Typer, friendly_errors: Callable) -> None:
    """Add `models` (a group: list, download, remove) and `doctor` to `app`."""
    models_app = typer.Typer(
        help="List, download and convert, or remove the cached models.",
        invoke_without_command=True,
        no_args_is_help=False,
    )

    @models_app.callback()
    @friendly_errors
    def models(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """List the known models, what is in the cache, and where the cache is."""
        if ctx.invoked_subcommand is not None:
            return
        from qwenscribe.model_cache import cache_summary

        summary = cache_summary()
        if as_json:
            print(json.dumps(summary, indent=2))
        else:
            _print_cache(summary)

    @models_app.command("list")
    @friendly_errors
    def list_models(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """List the known models, what is in the cache, and where the cache is."""
        from qwenscribe.model_cache import cache_summary

        summary = cache_summary()
        if as_json:
            print(json.dumps(summary, indent=2))
        else:
            _print_cache(summary)

    @models_app.command("download")
    @friendly_errors
    def download(
        name: Annotated[
            str,
            typer.Argument(help="0.6b, 1.7b, aligner, a Hugging Face id or a checkpoint folder."),
        ],
        encoder_precision: EncoderPrecisionsOption = None,
        decoder_quant: DecoderQuantsOption = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """Download a model (if needed) and convert it into the cache ahead of time."""
        from qwenscribe.model_cache import DEFAULT_PRECISION
        from qwenscribe.model_cache import download as run_download

        with stderr.status(f"downloading and converting {name} ..."):
            folders = run_download(
                name,
                tuple(encoder_precision or (DEFAULT_PRECISION,)),
                tuple(decoder_quant or ()),
            )
        if as_json:
            print(json.dumps({"model": name, "folders": [str(f) for f in folders]}, indent=2))
            return
        for folder in folders:
            stdout.print(Text(str(folder)))

    @models_app.command("remove")
    @friendly_errors
    def remove(
        target: Annotated[
            str, typer.Argument(help="A cached folder, or a model name / hub id (all its files).")
        ],
    ) -> None:
        """Remove a model from the cache: its download and the folders converted from it."""
        from qwenscribe.model_cache import remove as run_remove

        for path in run_remove(target):
            stderr.print(Text(f"removed {path}"))

    app.add_typer(models_app, name="models")

    @app.command()
    @friendly_errors
    def doctor(
        self_test: Annotated[
            bool,
            typer.Option(
                "--self-test/--quick",
                help="Also run the product end to end on tiny random models (a few seconds).",
            ),
        ] = True,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    ) -> None:
        """Check that this machine can run qwenscribe, and say what to fix."""
        from qwenscribe import doctor as checks_module

        if as_json:
            checks = checks_module.run_checks(self_test=self_test)
        else:
            with stderr.status("checking ..."):
                checks = checks_module.run_checks(self_test=self_test)
        passed = checks_module.all_required_pass(checks)
        if as_json:
            print(json.dumps(checks_module.as_json(checks), indent=2))
        else:
            table = Table(title="qwenscribe doctor")
            table.add_column("check")
            table.add_column("", justify="center")
            table.add_column("detail", overflow="fold")
            for check in checks:
                mark, color = _STATUS.get(check.status, ("?", "white"))
                name = check.name if check.required else f"{check.name} (optional)"
                table.add_row(name, Text(mark, style=f"bold {color}"), Text(check.detail))
            stdout.print(table)
            for check in checks:
                if check.advice and check.status != "ok":
                    mark, color = _STATUS[check.status]
                    line = Text(f"{mark} {check.name}: ", style=color)
                    line.append(check.advice)
                    stdout.print(line)
            stdout.print(
                Text("all required checks pass", style="green")
                if passed
                else Text("some required checks failed", style="bold red")
            )
        if not passed:
            raise typer.Exit(1)
