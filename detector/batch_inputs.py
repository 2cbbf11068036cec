"""The files a `detect batch` run reads: local folders and glob patterns as `detect -i` expands them, URIs
listed through pyarrow's filesystem for their scheme."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from typing import Optional

import pyarrow.fs

from .errors import DetectorError, InputNotFoundError
from .folder_walk import has_image_suffix
from .inputs import expand_inputs
from .load_options import DEFAULT_LOAD_OPTIONS, LoadOptions


def is_uri(text: str) -> bool:
    return "://" in text


def resolve_inputs(
    inputs: Sequence[str], recursive: bool = DEFAULT_LOAD_OPTIONS.recursive
) -> list[tuple[str, Optional[str]]]:
    """Local folders and globs -> absolute file paths (every node must see them: a shared filesystem; links
    kept as named, as `detect -i` reports them); URIs (s3://, gs://, hdfs://, file://…) listed through pyarrow's
    filesystem for their scheme, a folder's image files with its subfolders unless not recursive. Each with None,
    or, for a folder of the walk that cannot be read (a locked subfolder), why: a row with that error, as `detect`
    says it in an error line, while the files around it run (it refused the whole run before Ray started)."""
    listed: list[tuple[str, Optional[str]]] = []
    for raw in inputs:
        if is_uri(raw):
            listed.extend((uri, None) for uri in list_uri(raw, recursive))
        else:
            for source in expand_inputs(raw, LoadOptions(recursive=recursive)):
                if source.kind == "unreadable":
                    assert source.name is not None  # the walk names what it could not read
                    path, error = os.path.abspath(source.name), str(source.value)
                    if error.startswith(f"{source.name}: "):  # named as its row is: its line names it once (a
                        # relative input's said "/cwd/data/locked: data/locked: cannot be read")
                        error = path + error[len(source.name) :]
                    listed.append((path, error))
                else:
                    listed.append((os.path.abspath(source.value), None))
    if not listed:
        raise InputNotFoundError("no input files given")
    return listed


def list_uri(uri: str, recursive: bool) -> list[str]:
    """A URI naming a file -> [it]; naming a folder -> its image files' URIs, sorted (subfolders if recursive)."""
    try:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
        found = filesystem.get_file_info(root)
        if found.type == pyarrow.fs.FileType.NotFound:
            raise InputNotFoundError(f"the input {uri} does not exist")
        if found.type == pyarrow.fs.FileType.File:
            return [uri]
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=recursive))
    except DetectorError:
        raise
    except Exception as exc:  # a scheme pyarrow does not know, a store it cannot reach
        raise DetectorError(f"cannot list the input {uri}: {exc}") from None
    # the scheme and authority the filesystem's own paths leave out ("s3://", "hdfs://host:9000")
    prefix = uri.rstrip("/")[: len(uri.rstrip("/")) - len(root.rstrip("/"))]
    files = []
    for info in infos:
        try:
            path = info.path
        except UnicodeDecodeError:  # pyarrow holds names as UTF-8 only
            raise DetectorError(
                f"a file name under {uri} is not UTF-8, which pyarrow cannot list: pass a local folder as a path"
            ) from None
        if info.type == pyarrow.fs.FileType.File and has_image_suffix(path.rsplit("/", 1)[-1]):
            # percent-encoded, as FileSystem.from_uri decodes it again when the file is read: taken as it is,
            # 'c%20d.jpg' read the file 'c d.jpg', and a space, '#', '?' or 'ü' in a name failed or cut it short
            files.append(prefix + urllib.parse.quote(path, safe="/"))
    return sorted(files)
