"""Input expansion and output planning for many files at once (no model involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenscribe import batch
from qwenscribe.batch import (
    InputFile,
    check_destinations,
    expand_inputs,
    plan_outputs,
    read_list_file,
)
from qwenscribe.errors import InputError


def touch(root: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        paths.append(path)
    return paths


@pytest.fixture
def library(tmp_path):
    """lib/ with media at two depths, and files that are not media."""
    touch(
        tmp_path / "lib",
        "intro.mp3",
        "notes.txt",
        ".hidden.wav",
        "album1/01.flac",
        "album1/02.MP4",
        "album1/cover.jpg",
        "album2/disc/01.wav",
    )
    return tmp_path / "lib"


def names(found: list[InputFile]) -> list[str]:
    return [item.relative.as_posix() for item in found]


def test_a_folder_gives_its_media_files_and_recursive_descends(library):
    assert names(expand_inputs([library])) == ["intro.mp3"]
    deep = expand_inputs([library], recursive=True)
    assert names(deep) == ["album1/01.flac", "album1/02.MP4", "album2/disc/01.wav", "intro.mp3"]
    assert all(item.root == library for item in deep)


def test_files_keep_argument_order_and_repeats_are_dropped(library):
    first, second = library / "album1" / "01.flac", library / "intro.mp3"
    found = expand_inputs([second, first, second, library])
    assert [item.path for item in found] == [second, first]
    # A file named directly is taken whatever its extension, and has no folder root.
    assert expand_inputs([library / "notes.txt"])[0] == InputFile(library / "notes.txt")


def test_globs_are_expanded_and_mirror_below_their_fixed_part(library):
    found = expand_inputs([str(library / "**" / "01.*")])
    assert [item.path for item in found] == [
        library / "album1" / "01.flac",
        library / "album2" / "disc" / "01.wav",
    ]
    assert names(found) == ["album1/01.flac", "album2/disc/01.wav"]


def test_missing_paths_and_empty_globs_are_reported_together(library):
    with pytest.raises(InputError) as caught:
        expand_inputs([library / "gone.wav", str(library / "*.ogg"), library / "intro.mp3"])
    assert "gone.wav" in caught.value.message
    assert "*.ogg (matches nothing)" in caught.value.message


def test_a_missing_list_entry_names_its_list(library, tmp_path):
    listing = tmp_path / "todo.txt"
    listing.write_text(f"{library / 'intro.mp3'}\nlost.wav\n*.nothing\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        expand_inputs([f"@{listing}"])
    assert f"{tmp_path / 'lost.wav'} (listed in {listing})" in caught.value.message
    assert f"*.nothing (matches nothing, listed in {listing})" in caught.value.message


def test_addresses_are_refused_with_what_to_do(library):
    url = "https://example.com/talk.mp3"
    with pytest.raises(InputError) as caught:
        expand_inputs([library / "intro.mp3", url])
    assert f"not addresses: {url}." in caught.value.message  # not mangled into https:/
    assert "yt-dlp" in caught.value.hint


def test_list_files_are_relative_to_themselves(library, tmp_path, monkeypatch):
    listing = library / "album1" / "list.txt"
    listing.write_text(
        "# my picks\n\n  01.flac  \n../intro.mp3\n" + str(library / "album2") + "\n",
        encoding="utf-8",
    )
    assert read_list_file(listing) == ["01.flac", "../intro.mp3", str(library / "album2")]
    monkeypatch.chdir(tmp_path)  # somewhere else: entries still resolve against the list
    found = expand_inputs([f"@{listing}"], recursive=True)
    assert [item.path.resolve() for item in found] == [
        library / "album1" / "01.flac",
        library / "intro.mp3",
        library / "album2" / "disc" / "01.wav",
    ]
    with pytest.raises(InputError, match=r"nope\.txt"):
        expand_inputs(["@nope.txt"])


def test_outputs_beside_the_input_by_default(library):
    found = expand_inputs([library], recursive=True)
    plans = plan_outputs(found, ["srt", "vtt"])
    first = plans[0]
    assert first.outputs == {
        "srt": library / "album1" / "01.srt",
        "vtt": library / "album1" / "01.vtt",
    }


def test_output_dir_mirrors_the_tree_below_the_folder_argument(library, tmp_path):
    out = tmp_path / "out"
    plans = plan_outputs(expand_inputs([library], recursive=True), ["srt"], out)
    targets = [plan.outputs["srt"] for plan in plans]
    assert targets == [
        out / "album1" / "01.srt",
        out / "album1" / "02.srt",
        out / "album2" / "disc" / "01.srt",
        out / "intro.srt",
    ]


def test_same_stem_in_one_folder_keeps_the_media_extension(tmp_path):
    mp3, flac, other = touch(tmp_path, "a.mp3", "a.FLAC", "b.wav")
    plans = plan_outputs(expand_inputs([tmp_path]), ["srt"])
    assert [plan.outputs["srt"].name for plan in plans] == ["a.FLAC.srt", "a.mp3.srt", "b.srt"]
    # Deterministic: the same names whatever order the inputs come in.
    again = plan_outputs(expand_inputs([other, mp3, flac]), ["srt"])
    assert {plan.input.path.name: plan.outputs["srt"].name for plan in again} == {
        "b.wav": "b.srt",
        "a.mp3": "a.mp3.srt",
        "a.FLAC": "a.FLAC.srt",
    }


def test_same_stem_in_different_folders_only_clashes_in_one_output_folder(tmp_path):
    first, second = touch(tmp_path, "x/a.wav", "y/a.wav")
    beside = plan_outputs(expand_inputs([first, second]), ["srt"])
    assert [plan.outputs["srt"] for plan in beside] == [tmp_path / "x/a.srt", tmp_path / "y/a.srt"]
    with pytest.raises(InputError, match="would both be written to"):
        plan_outputs(expand_inputs([first, second]), ["srt"], tmp_path / "out")
    mirrored = plan_outputs(expand_inputs([tmp_path], recursive=True), ["srt"], tmp_path / "out")
    assert [plan.outputs["srt"] for plan in mirrored] == [
        tmp_path / "out/x/a.srt",
        tmp_path / "out/y/a.srt",
    ]


def test_an_output_never_replaces_an_input(tmp_path):
    (transcript,) = touch(tmp_path, "talk.json")
    plans = plan_outputs([InputFile(transcript)], ["json", "srt"])
    assert plans[0].outputs == {
        "json": tmp_path / "talk.json.json",
        "srt": tmp_path / "talk.json.srt",
    }
    for plan in plans:
        assert transcript not in plan.outputs.values()


def test_output_folders_that_do_not_exist_yet_are_accepted(library, tmp_path):
    items = expand_inputs([library], recursive=True)
    check_destinations(plan_outputs(items, ["srt"], tmp_path / "new" / "deeper"))
    assert not (tmp_path / "new").exists()  # checked, not created: the writers make it


def test_a_file_given_as_the_output_folder_is_refused(library, tmp_path):
    (blocker,) = touch(tmp_path, "out.wav")
    intro = [InputFile(library / "intro.mp3")]
    with pytest.raises(InputError, match=r"out\.wav is a file, not a folder\. Give"):
        check_destinations(plan_outputs(intro, ["srt"], blocker))
    items = [InputFile(library / "album1" / "01.flac", root=library)]  # to out.wav/album1
    with pytest.raises(InputError, match=r"is a file, not a folder, so .*album1 cannot be made"):
        check_destinations(plan_outputs(items, ["srt"], blocker))


def test_an_output_folder_without_write_permission_is_refused(library, monkeypatch):
    refused = library / "album1"
    monkeypatch.setattr(batch.os, "access", lambda path, mode: Path(path) != refused)
    items = expand_inputs([library], recursive=True)
    with pytest.raises(InputError, match=r"Cannot write in .*album1") as error:
        check_destinations(plan_outputs(items, ["srt"]))
    assert "--output-dir" in error.value.hint


def test_album_folder_is_the_first_level_below_the_folder_argument(library):
    found = {item.relative.as_posix(): item for item in expand_inputs([library], recursive=True)}
    assert found["album2/disc/01.wav"].album_folder == library / "album2"
    assert found["album1/01.flac"].album_folder == library / "album1"
    assert found["intro.mp3"].album_folder is None
    assert InputFile(library / "intro.mp3").album_folder is None
