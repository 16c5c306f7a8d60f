"""What the command modules share: the two consoles and the options that several commands take."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

stdout = Console()
stderr = Console(stderr=True)  # tables, progress, messages: stdout stays for results

# The choices are written out rather than imported so the CLI starts without loading onnx/gguf;
# the converter refuses anything else with the list of what it knows.
EncoderPrecisionsOption = Annotated[
    list[str] | None,
    typer.Option("--encoder-precision", "-e", help="fp32, fp16, int8 or int4; repeat for several."),
]
DecoderQuantsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--decoder-quant",
        "-q",
        help=(
            "int8, fp16, fp32 or int4 (ONNX Runtime); f32, f16, bf16, q8_0, q6_k, q5_k, q4_k "
            "or q4_0 (GGUF, llama.cpp); repeat for several."
        ),
    ),
]
