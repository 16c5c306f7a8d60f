"""Many inputs at once: which media files the arguments name, and where their outputs go.

Arguments are files, folders (the media files inside, by extension; `recursive` descends),
glob patterns (expanded here too, for shells that do not) and `@list.txt` files (one path per
line; blank lines and `#` comments ignored; relative paths are relative to the list file).

Outputs go beside each input, or under an output folder that mirrors the folder structure below
the folder argument (or the fixed part of a glob) the input came from. Naming rule: an output is
named after the input's stem (`talk.mp4` -> `talk.srt`), except when two inputs would share an
output folder and stem (`a.mp3` and `a.flac`), or when that name would be an input itself: then
the input's whole name is kept (`a.mp3.srt`, `a.flac.srt`). Whatever still collides after that
is refused before any work, so nothing is silently overwritten.

Pure functions over paths; no printing (the CLI shows the results).
"""

from __future__ import annotations

import glob
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qwenscribe.errors import InputError
from qwenscribe.paths import nearest_existing

AUDIO_EXTENSIONS = frozenset(
    [
        ".aac",
        ".aif",
        ".aiff",
        ".alac",
        ".amr",
        ".ape",
        ".au",
        ".caf",
        ".flac",
        ".m4a",
        ".m4b",
        ".mka",
        ".mp2",
        ".mp3",
        ".mpga",
        ".oga",
        ".ogg",
        ".opus",
        ".ra",
        ".wav",
        ".wave",
        ".weba",
        ".wma",
        ".wv",
    ]
)
VIDEO_EXTENSIONS = frozenset(
    [
        ".3g2",
        ".3gp",
        ".asf",
        ".avi",
        ".f4v",
        ".flv",
        ".m2ts",
        ".m4v",
        ".mkv",
        ".mov",
        ".mp4",
        ".mpeg",
        ".mpg",
        ".mts",
        ".mxf",
        ".ogv",
        ".rm",
        ".rmvb",
        ".ts",
        ".vob",
        ".webm",
        ".wmv",
    ]
)
MEDIA_EXTENSIONS = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS

_GLOB_MAGIC = frozenset("*?[")


@dataclass(frozen=True)
class InputFile:
    """One file to process, and the folder argument (or glob base) it was found under."""

    path: Path
    root: Path | None = None  # None: named directly (a file argument or a list entry)

    @property
    def relative(self) -> Path:
        """Its path below `root` (just its name when named directly): what -o mirrors."""
        if self.root is None:
            return Path(self.path.name)
        return self.path.relative_to(self.root)

    @property
    def album_folder(self) -> Path | None:
        """The first-level subfolder of `root` that holds it; None when it lies in `root`."""
        parts = self.relative.parts
        if self.root is None or len(parts) < 2:
            return None
        return self.root / parts[0]


@dataclass(frozen=True)
class OutputPlan:
    """Where one input's files go: {format: path}."""

    input: InputFile
    outputs: dict[str, Path]


def is_media(path: Path, extensions: Iterable[str] = MEDIA_EXTENSIONS) -> bool:
    return path.suffix.lower() in extensions


def has_glob_magic(text: str) -> bool:
    return any(char in _GLOB_MAGIC for char in text)


# http://, https://, rtmp://...: a scheme of two letters or more, then "//" (so not C:\).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def expand_inputs(
    arguments: Sequence[str | os.PathLike[str]],
    *,
    recursive: bool = False,
    extensions: Iterable[str] = MEDIA_EXTENSIONS,
) -> list[InputFile]:
    """The files the arguments name, in argument order, each once (the first mention wins).

    A folder gives its media files sorted by path; a glob its matches sorted (files of any
    extension, a matched folder as a folder); a list file its entries in order. Every argument
    that names nothing is reported in one `InputError`.
    """
    extensions = frozenset(ext.lower() for ext in extensions)
    urls = [str(argument) for argument in arguments if _URL.match(str(argument))]
    if urls:
        raise InputError(
            f"qwenscribe reads local files, not addresses: {', '.join(urls)}.",
            "Download the media first (from a web page with a tool such as yt-dlp: "
            "`yt-dlp -x URL`), then transcribe the file.",
        )
    found: list[InputFile] = []
    missing: list[str] = []
    for argument in arguments:
        _expand_one(str(argument), Path.cwd(), recursive, extensions, found, missing, None)
    if missing:
        raise InputError(
            f"No such file or folder: {', '.join(missing)}.",
            "Check the path (quote names that contain spaces, and globs your shell should "
            "not expand).",
        )
    unique: dict[Path, InputFile] = {}
    for item in found:
        unique.setdefault(item.path.resolve(), item)
    return list(unique.values())


def _expand_one(
    text: str,
    base: Path,
    recursive: bool,
    extensions: frozenset[str],
    found: list[InputFile],
    missing: list[str],
    listed_in: Path | None,  # the list file this entry comes from; None for an argument
) -> None:
    if listed_in is None and text.startswith("@") and len(text) > 1:
        list_file = _absolute(Path(text[1:]), base)
        if not list_file.is_file():
            missing.append(text)
            return
        for entry in read_list_file(list_file):
            # Lists do not nest: an entry starting with @ is a file name.
            _expand_one(entry, list_file.parent, recursive, extensions, found, missing, list_file)
        return
    path = Path(os.path.expanduser(text))
    if not path.is_absolute() and base != Path.cwd():
        path = base / path
    listed = [] if listed_in is None else [f"listed in {listed_in}"]
    if path.exists() or not has_glob_magic(text):
        if path.is_dir():
            found.extend(_folder(path, recursive, extensions))
        elif path.exists():
            found.append(InputFile(path))
        else:
            missing.append(_with_notes(str(path), listed))
        return
    pattern = str(path)
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        missing.append(_with_notes(pattern, ["matches nothing", *listed]))
        return
    root = _glob_base(pattern)
    for match in map(Path, matches):
        if match.is_dir():
            found.extend(_folder(match, recursive, extensions))
        else:
            found.append(InputFile(match, root))


def _with_notes(name: str, notes: list[str]) -> str:
    return f"{name} ({', '.join(notes)})" if notes else name


def _absolute(path: Path, base: Path) -> Path:
    path = Path(os.path.expanduser(path))
    return path if path.is_absolute() else base / path


def _folder(folder: Path, recursive: bool, extensions: frozenset[str]) -> list[InputFile]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = [
        path
        for path in candidates
        if path.suffix.lower() in extensions and not path.name.startswith(".") and path.is_file()
    ]
    return [InputFile(path, folder) for path in sorted(files)]


def _glob_base(pattern: str) -> Path:
    """The leading folders of a glob pattern that hold no wildcard: what -o mirrors below."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if has_glob_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def read_list_file(path: Path) -> list[str]:
    """The entries of a list file: one per line, stripped; blank lines and # comments skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(
            f"Could not read the list file {path}: {error}.",
            "Give a UTF-8 text file with one path per line.",
        ) from error
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            entries.append(entry)
    return entries


def plan_outputs(
    inputs: Sequence[InputFile], formats: Sequence[str], output_dir: Path | None = None
) -> list[OutputPlan]:
    """{format: path} for each input, by the naming rule in this module's docstring.

    Raises `InputError` when two inputs would still write the same file (the same name from
    two folders into one output folder) or an output would replace an input.
    """
    folders = [_destination(item, output_dir) for item in inputs]
    groups: dict[tuple[Path, str], list[int]] = defaultdict(list)
    for index, (item, folder) in enumerate(zip(inputs, folders, strict=True)):
        groups[(_key(folder), item.path.stem.casefold())].append(index)
    keep_suffix = {index for members in groups.values() if len(members) > 1 for index in members}

    input_keys = {_key(item.path) for item in inputs}
    plans = []
    for index, (item, folder) in enumerate(zip(inputs, folders, strict=True)):
        outputs = _outputs(folder, item.path, formats, index in keep_suffix)
        if any(_key(target) in input_keys for target in outputs.values()):
            outputs = _outputs(folder, item.path, formats, True)
        plans.append(OutputPlan(item, outputs))
    _refuse_collisions(plans, input_keys)
    return plans


def check_destinations(plans: Sequence[OutputPlan]) -> None:
    """Refuses, before any work, output folders that cannot be written.

    A folder that does not exist yet is fine when the nearest existing folder above it is
    writable (the writers create it); a file where a folder should be, or a folder this user may
    not write in, raises `InputError` naming it.
    """
    checked: set[Path] = set()
    for plan in plans:
        for target in plan.outputs.values():
            folder = target.parent
            if folder in checked:
                continue
            checked.add(folder)
            existing = nearest_existing(folder)
            if not existing.is_dir():
                within = "" if existing == folder else f", so {folder} cannot be made"
                raise InputError(
                    f"{existing} is a file, not a folder{within}.",
                    "Give --output-dir a folder, or a path that does not exist yet.",
                )
            if not os.access(existing, os.W_OK | os.X_OK):
                raise InputError(
                    f"Cannot write in {existing} (no permission).",
                    "Choose a folder you can write in with --output-dir.",
                )


def _destination(item: InputFile, output_dir: Path | None) -> Path:
    if output_dir is None:
        return item.path.parent
    return output_dir / item.relative.parent


def _outputs(folder: Path, source: Path, formats: Sequence[str], whole: bool) -> dict[str, Path]:
    name = source.name if whole else source.stem
    return {fmt: folder / f"{name}.{fmt}" for fmt in formats}


def _key(path: Path) -> Path:
    """One spelling per file: absolute, normalized, case-folded (macOS and Windows ignore case)."""
    return Path(os.path.normcase(os.path.abspath(path)).casefold())


def _refuse_collisions(plans: Sequence[OutputPlan], input_keys: set[Path]) -> None:
    seen: dict[Path, Path] = {}
    for plan in plans:
        for target in plan.outputs.values():
            key = _key(target)
            if key in input_keys:
                raise InputError(
                    f"Writing {target} would replace an input.",
                    "Choose another --output-dir or format.",
                )
            if key in seen and seen[key] != plan.input.path:
                raise InputError(
                    f"{seen[key]} and {plan.input.path} would both be written to {target}.",
                    "Give them different names, or transcribe them into different folders.",
                )
            seen[key] = plan.input.path
