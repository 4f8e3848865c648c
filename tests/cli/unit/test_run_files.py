"""The files `segflow run` is given (issue 18, bugs 2 and 3): real files, links, FIFOs and folders.

GIVEN files and folders as a user passes them, some of which cannot be read
WHEN `segflow run` collects them
THEN each readable file has its key (its name, or its path inside a folder given), each unreadable one a
     line naming it and why, and two different files under one key are refused before anything runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segflow_cli.main import main
from segflow_cli.runfiles import collect_inputs, distinct_files, same_keys


def test_files_and_folders_get_their_keys(tmp_path: Path) -> None:
    (tmp_path / "photos" / "portraits").mkdir(parents=True)
    (tmp_path / "photos" / "portraits" / "me.jpg").write_bytes(b"x")
    (tmp_path / "photos" / ".thumbs").mkdir()
    (tmp_path / "photos" / ".thumbs" / "me.jpg").write_bytes(b"x")  # hidden folder: left out
    (tmp_path / "photos" / ".DS_Store").write_bytes(b"x")  # hidden file: left out
    (tmp_path / "cat.png").write_bytes(b"x")
    found = collect_inputs([tmp_path / "photos", tmp_path / "cat.png"])
    assert found.files == [
        (tmp_path / "photos/portraits/me.jpg", "portraits/me.jpg"),
        (tmp_path / "cat.png", "cat.png"),
    ]
    assert found.unreadable == []


def test_every_kind_of_unreadable_input_is_named_with_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(b"x")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(tmp_path / "given-pipe.jpg")
    found = collect_inputs(
        [folder, tmp_path / "link.jpg", tmp_path / "given-pipe.jpg", tmp_path / "typo.jpg"]
    )
    assert found.files == [(folder / "good.jpg", "good.jpg")]
    assert sorted(found.unreadable) == sorted(
        [
            f"{folder / 'gone.jpg'}: a broken symbolic link (to {tmp_path / 'deleted.jpg'})",
            f"{folder / 'pipe.jpg'}: not a regular file (a FIFO)",
            f"{tmp_path / 'link.jpg'}: a broken symbolic link (to {tmp_path / 'nowhere.jpg'})",
            f"{tmp_path / 'given-pipe.jpg'}: not a regular file (a FIFO)",
            f"{tmp_path / 'typo.jpg'}: no such file or folder",
        ]
    )


def test_two_files_under_one_key_are_a_clash_and_one_file_twice_is_not(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jpg").write_bytes(folder.encode())
    files = collect_inputs([tmp_path / "a/x.jpg", tmp_path / "b/x.jpg", tmp_path / "a/x.jpg"]).files
    assert same_keys(files) == [(tmp_path / "a/x.jpg", tmp_path / "b/x.jpg", "x.jpg")]
    assert distinct_files(files[::2]) == [(tmp_path / "a/x.jpg", "x.jpg")]
    with pytest.raises(ValueError, match="under the same key"):
        distinct_files(files)


def test_run_refuses_two_files_under_one_key_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jpg").write_bytes(folder.encode())
    out = tmp_path / "out"
    status = main(["run", str(tmp_path / "a/x.jpg"), str(tmp_path / "b/x.jpg"), "--out", str(out)])
    _, err = capsys.readouterr()
    assert status == 2
    assert f"{tmp_path / 'a/x.jpg'} and {tmp_path / 'b/x.jpg'} (key x.jpg)" in err
    assert not out.exists()  # no engine, no bucket: nothing ran
