"""`streamcli models list | download | info`: the registry and model folders, as tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from streamcli.cli.common import (
    DEBUG_OPTION,
    DEVICE_OPTION,
    THREADS_OPTION,
    console,
    err_console,
    load_recognizer,
    print_table,
    recognizer_config,
    run_command,
)
from streamcli.errors import StreamcliError

if TYPE_CHECKING:
    from streamcli.registry import KnownModel


def models_list(debug: bool = DEBUG_OPTION) -> None:
    """Known downloadable models, their size and whether they are in the cache."""

    def body() -> None:
        from streamcli.registry import KNOWN_MODELS, cache_dir, human_bytes, missing_files

        rows = []
        for m in KNOWN_MODELS.values():
            state = "yes" if not missing_files(m) else ("int8" if not missing_files(m, "int8") else "no")
            rows.append(
                [
                    m.name,
                    ", ".join(m.aliases),
                    m.family,
                    human_bytes(m.size_bytes),
                    human_bytes(sum(f.size_bytes for f in m.files_for("int8"))),
                    state,
                ]
            )
        from streamcli.registry import default_model_dir, shipped_models

        default = default_model_dir()
        for folder in shipped_models():
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            mark = "shipped, default" if folder == default else "shipped"
            rows.insert(0, [folder.name, "", "wctc (two-pass)" if (folder / "encoder.onnx").is_file() and
                            _has_second_pass(folder) else "wctc", human_bytes(size), "-", mark])
        headers = ["name", "aliases", "family", "size", "int8 size", "downloaded"]
        print_table(f"models (cache: {cache_dir()})", headers, rows)

    run_command(body, debug=debug)


def models_download(
    name: str = typer.Argument(..., help="A name (or alias) from `streamcli models list`."),
    precision: str = typer.Option(
        "all", "--precision", help="all, int8 (CPU) or fp32 (CUDA): which files of a model to fetch."
    ),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Download a model into the cache, verifying size and sha256 of every file."""

    def body() -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from streamcli.registry import KNOWN_MODELS, download_model, find_known

        known = find_known(name)
        if known is None:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}")
        known.files_for(precision)  # validates --precision before any download
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
        ) as bar:
            tasks: dict[str, int] = {}

            def progress(file_name: str, done: int, total: int) -> None:
                if file_name not in tasks:
                    tasks[file_name] = bar.add_task(file_name, total=total)
                bar.update(tasks[file_name], completed=done)

            folder = download_model(known, precision=precision, progress=progress)
        console.print(Text(f"{known.name}: verified (size + sha256) in {folder}"), soft_wrap=True)

    run_command(body, debug=debug)


def models_info(
    target: str = typer.Argument(..., help="A model folder, or a name from `streamcli models list`."),
    device: str = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Show a model: family, chunk/shift, states, ONNX metadata and the provider it runs on.

    For a registry name: its files, sizes and sha256, and (when downloaded) the model itself.
    """

    def body() -> None:
        from streamcli.registry import find_known, resolve_model

        known = find_known(target) if not Path(target).exists() else None
        if known is None:
            _print_model_folder(resolve_model(target), device, threads)
            return
        _print_known(known)
        try:
            folder = resolve_model(known.name)
        except StreamcliError as exc:
            console.print(Text(f"not usable yet: {exc}"), soft_wrap=True)
            return
        _print_model_folder(folder, device, threads)

    run_command(body, debug=debug)


def _has_second_pass(folder: Path) -> bool:
    from streamcli.providers import read_onnx_metadata

    return bool(read_onnx_metadata(folder / "encoder.onnx").get("second_pass"))


def _print_known(known: KnownModel) -> None:
    from streamcli.registry import human_bytes, model_dir

    folder = model_dir(known)
    console.print(
        Text(f"{known.name} ({known.family}, {known.license}): {known.description}"), soft_wrap=True
    )
    rows = [
        [
            f.name,
            f.precision,
            human_bytes(f.size_bytes),
            f.sha256,
            "yes" if (folder / f.name).is_file() else "no",
        ]
        for f in known.files
    ]
    print_table(f"files (from {known.base_url})", ["file", "precision", "size", "sha256", "present"], rows)
    console.print(Text(f"cache folder: {folder}"), soft_wrap=True)


_INFO_FIELDS = (
    "family",
    "name",
    "path",
    "files",
    "provider",
    "threads",
    "decoding",
    "sample_rate",
    "feature_dim",
    "frame_shift_ms",
    "chunk_frames",
    "shift_frames",
    "window_frames",
    "overlap_frames",
    "subsampling",
    "state_bytes",
    "feature_type",
)


def _print_model_folder(folder: Path, device: str, threads: int) -> None:
    import onnxruntime as ort

    from streamcli.families import family_of

    recognizer = load_recognizer(recognizer_config(str(folder), device, threads))
    info = recognizer.info

    def shown(value: object) -> str:
        if isinstance(value, (tuple, list)):
            return ", ".join(str(v) for v in value)
        return str(value)

    rows = [[field, shown(getattr(info, field))] for field in _INFO_FIELDS]
    if info.second_pass:
        rows.append(["second pass", info.second_pass])
    shift_ms = info.shift_frames * info.frame_shift_ms
    if not family_of(info.family).window:  # a transducer: its chunk and left context, by name
        rows.append(["chunk / left context",
                     f"{info.shift_frames} / {info.overlap_frames} frames ({shift_ms} ms per step)"])
    else:
        rows.append(["window / overlap",
                     f"{info.window_frames} / {info.overlap_frames} frames ({shift_ms} ms per step)"])
    print_table(f"model {folder}", ["field", "value"], rows, show_header=False)
    for encoder in sorted(folder.glob("encoder*.onnx")):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(encoder), options, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        rows = [[key, meta[key]] for key in sorted(meta)]
        print_table(f"{encoder.name}: ONNX metadata", ["key", "value"], rows, show_header=False)
        inputs = session.get_inputs()
        rows = [[item.name, str(item.shape), item.type] for item in inputs]
        print_table(f"{encoder.name}: inputs (x + cached states)", ["input", "shape", "type"], rows)


def register(models_app: typer.Typer) -> None:
    """Adds `streamcli models list/download/info` to the models sub-app."""
    models_app.command("list")(models_list)
    models_app.command("download")(models_download)
    models_app.command("info")(models_info)
