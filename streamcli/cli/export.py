"""`streamcli export`: thin command over streamcli_tools.train.export (torch is imported when it runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from streamcli.cli.common import DEBUG_OPTION, console, fail, run_command


def register(app: typer.Typer) -> None:
    """Adds `streamcli export` to the app."""

    @app.command("export")
    def export_command(
        window: int = typer.Option(..., "--window", help="Default window W in 10 ms frames (multiple of 5)."),
        overlap: int = typer.Option(
            ..., "--overlap", help="Default overlap O in 10 ms frames (multiple of 5, 0 <= O < W)."
        ),
        out: Path = typer.Option(..., "--out", help="Model folder to write (encoder.onnx, tokens.txt)."),
        checkpoint: Path | None = typer.Option(
            None, "--checkpoint", help="Checkpoint written by scripts/train.py (last.pt / final.pt)."
        ),
        random_init: bool = typer.Option(
            False, "--random-init", help="Without --checkpoint: export an untrained model (pipeline tests)."
        ),
        int8: bool = typer.Option(False, "--int8", help="Also write encoder.int8.onnx (dynamic int8)."),
        debug: bool = DEBUG_OPTION,
    ) -> None:
        """Export the windowed-CTC encoder to an ONNX streaming model folder (needs the train extra)."""

        def body() -> None:
            try:
                import torch  # noqa: F401
                from streamcli_tools.train.export import run_export
            except ImportError:
                fail("streamcli export needs the training tools: pip install 'streamcli[train]'")

            meta = run_export(
                str(out),
                window,
                overlap,
                str(checkpoint) if checkpoint is not None else None,
                random_init=random_init,
                int8=int8,
            )
            console.print(
                f"wrote {out}/encoder.onnx (W={meta['window_frames']}, O={meta['overlap_frames']}, "
                f"vocab {meta['vocab_size']}, {int(meta['num_parameters']):,} parameters)"
            )

        run_command(body, debug=debug)
