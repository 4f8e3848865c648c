"""The files `segflow run` is given: each with its key under the input prefix, and what cannot be read.

A file given by itself is keyed by its name, a folder's files by their path inside it; two different files
under one key are refused before anything runs (the second would overwrite the first).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple


class Inputs(NamedTuple):
    """The files a run was given, each with its key under the input prefix, and those it cannot read."""

    files: list[tuple[Path, str]]
    unreadable: list[str]
    """One line each: the path and why it cannot be read."""


def collect_inputs(paths: Sequence[Path]) -> Inputs:
    """(file, key relative to the input prefix) for every file given, folders walked recursively (their
    sub-folders kept in the keys, hidden files and folders left out); what cannot be read, with why."""
    inputs = Inputs([], [])
    for path in paths:
        if path.is_dir():
            _walk(path, inputs)
        else:
            _add_file(path, path.name, inputs)
    return inputs


def _walk(folder: Path, inputs: Inputs) -> None:
    def cannot_list(error: OSError) -> None:
        inputs.unreadable.append(f"{error.filename}: cannot list the folder ({reason_of(error)})")

    for directory, folders, names in os.walk(folder, onerror=cannot_list):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                path = Path(directory) / name
                _add_file(path, path.relative_to(folder).as_posix(), inputs)


def _add_file(path: Path, key: str, inputs: Inputs) -> None:
    problem = _unreadable(path)
    if problem is None:
        inputs.files.append((path, key))
    else:
        inputs.unreadable.append(f"{path}: {problem}")


def _unreadable(path: Path) -> str | None:
    """Why `path` cannot be read as an input file, or None when it can."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"a broken symbolic link (to {path.readlink()})"
        return "no such file or folder"
    except OSError as error:
        return reason_of(error)
    if not stat.S_ISREG(mode):
        kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device"}
        kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
        return f"not a regular file ({kind})"
    try:
        with path.open("rb"):
            return None
    except OSError as error:
        return reason_of(error)


def reason_of(error: OSError) -> str:
    return (error.strerror or type(error).__name__).lower()


def same_keys(files: Sequence[tuple[Path, str]]) -> list[tuple[Path, Path, str]]:
    """Pairs of different files that would be uploaded under the same key (one would overwrite the
    other): (first, second, key)."""
    seen: dict[str, Path] = {}
    clashes = []
    for path, key in files:
        first = seen.setdefault(key, path)
        if first.resolve() != path.resolve():
            clashes.append((first, path, key))
    return clashes


def distinct_files(files: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """The files, each once; two different files under one key are refused before anything runs."""
    clashes = same_keys(files)
    if clashes:
        named = "; ".join(f"{first} and {second} (key {key})" for first, second, key in clashes)
        raise ValueError(
            f"these files would be uploaded under the same key, the second over the first: {named}. "
            "Pass their folder instead (a folder keeps its sub-folders in the keys), or rename one"
        )
    unique: dict[str, tuple[Path, str]] = {}
    for path, key in files:
        unique.setdefault(key, (path, key))  # the same file given twice is run once
    return list(unique.values())
