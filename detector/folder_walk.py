"""Folder walks and glob patterns: the image and PDF files they find, and what could not be read on the way."""

from __future__ import annotations

import errno
import os
from pathlib import Path

# A folder's files read: PaddleX's image and PDF suffixes, and JPEG 2000.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm", ".pnm"}
    | {".sr", ".ras", ".pdf"}
)
GLOB_CHARACTERS = frozenset("*?[")
# The folder mkfs makes at a file system's root for fsck, which only root may list
FSCK_FOLDER = "lost+found"


def has_image_suffix(name: str) -> bool:
    """Whether a walked file's name is read, by PaddleX's test: the text after its last dot, in any case, is one of
    IMAGE_EXTENSIONS. So `.png` is read (pathlib gives it no suffix), and `png`, all of which is that text."""
    return f".{name.rsplit('.', 1)[-1].lower()}" in IMAGE_EXTENSIONS


def list_folder_images(
    folder: Path, recursive: bool = True, given: bool = True
) -> tuple[list[Path], list[tuple[Path, OSError]]]:
    """Image and PDF files in a folder and, if recursive (PaddleX's way), its subfolders (links to folders not
    followed), in the walk's order (_walk_sources sorts them); and each folder (or
    entry of unknown kind) that could not be read, with why. pathlib's rglob skipped an unreadable subfolder
    without a word (its images missing, exit 0), and a subfolder removed while it was walked (a spool folder)
    ended the whole walk. A mount point's lost+found that cannot be listed is left out, as PaddleX's os.walk
    leaves it: fsck's, never the user's images, it made every walk of a data disk fail (exit 1).
    ``given``: the folder was named by the user, so it is said whatever it is; False for one a glob pattern
    matched (``/mnt/data/*``), which is taken as the walk takes the folders it finds."""
    files: list[Path] = []
    unreadable: list[tuple[Path, OSError]] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    path = current / entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if recursive:
                                pending.append(path)
                            continue
                    except FileNotFoundError:  # gone since it was listed
                        continue
                    except OSError as exc:  # its kind not to be looked up (a folder listable, not searchable)
                        unreadable.append((path, exc))
                        continue
                    if has_image_suffix(entry.name) and _is_file(entry, path, unreadable):
                        files.append(path)
        except FileNotFoundError as exc:
            if given and current == folder:  # the folder given is gone: said; one found gone meanwhile held nothing
                unreadable.append((current, exc))
        except OSError as exc:  # no permission to list it, an I/O error
            if (given and current == folder) or not _fsck_folder_locked(current, exc):
                unreadable.append((current, exc))
    return files, unreadable


def _fsck_folder_locked(path: Path, exc: OSError) -> bool:
    """Whether ``path`` is the lost+found of a file system's root, refused for want of permission."""
    return path.name == FSCK_FOLDER and isinstance(exc, PermissionError) and os.path.ismount(path.parent)


# What pathlib's is_file takes as "not a file": gone, a path through a file, a link loop, a bad descriptor
_NOT_A_FILE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF})


def _is_file(entry: os.DirEntry, path: Path, unreadable: list[tuple[Path, OSError]]) -> bool:
    """Whether a walked entry with an image's name is a file (a link to one too), as pathlib's is_file says;
    an error it would raise is added to unreadable."""
    try:
        return entry.is_file()
    except OSError as exc:
        if exc.errno not in _NOT_A_FILE_ERRNOS:
            unreadable.append((path, exc))
        return False


def glob_matches(pattern: str) -> list[Path]:
    """What a glob pattern matches, in no set order (_walk_sources sorts them); ``**`` is any depth of folders,
    walked without following symlinked folders (glob.glob follows them: a link back up the tree was walked round
    and round, each file found tens of times, and two such links never ended). ``*`` matches hidden names too, as
    folder walks read them; a pattern ending in ``**`` matches the files below."""
    parts = Path(pattern).parts
    literal = next((index for index, part in enumerate(parts) if GLOB_CHARACTERS & set(part)), len(parts))
    root, rest = Path(*parts[:literal]) if literal else Path("."), parts[literal:]
    if rest[-1:] == ("**",):
        rest = (*rest, "*")
    return list(root.glob(str(Path(*rest)))) if rest else [root]
