"""A release imported as it lands in the cache: rewritten for this CPU by detector/optimize (where the onnx
package is installed), in <cache>/<model_name>/inference.onnx beside the release in official/; the release
runs as published where the import cannot run or fails."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from .hub import MODEL_FILENAME, NO_OPTIMIZE_ENV_VAR, OFFICIAL_FOLDER, optimizing_enabled, tell
from .settings import INFERENCE_YML

# In official/: the import of this release failed with this package version (and why); not tried again
# until the version changes (the rewrites may then take it), so every use does not redo a failed import.
IMPORT_FAILED_MARKER = ".import-failed"


def releases_imported_here() -> bool:
    """Whether releases are imported here: DETECTOR_NO_OPTIMIZE unset and the onnx package installed."""
    from .optimize import optimizer_available

    return optimizing_enabled() and optimizer_available()


def import_release(model_name: str, official: Path) -> Path:
    """Import the release in official/ as ../inference.onnx (detector/optimize) and return that path;
    the release itself if the import fails (it is only a speed-up: say why, and run the model as published)."""
    from .errors import DetectorError, OutputNotWritableError
    from .optimize.onnx_import import export_from_onnx, import_summary

    output = official.parent / MODEL_FILENAME
    if not os.access(official.parent, os.W_OK):  # a read-only cache (a prebuilt image): no place for the import
        return _as_published(
            official,
            model_name,
            f"{official.parent} is read-only, so its rewrite for this CPU cannot be saved "
            f"({NO_OPTIMIZE_ENV_VAR}=1 silences this)",
        )
    tell(f"rewriting {model_name} for this CPU (once; {NO_OPTIMIZE_ENV_VAR}=1 skips it)")
    try:
        record = export_from_onnx(model_name, official, output, progress=lambda line: None)
    except OutputNotWritableError as exc:  # a full disk: nothing wrong with the release, so tried again next time
        return _as_published(official, model_name, f"its rewrite could not be saved ({exc.reason}); {TRIED_AGAIN}")
    except DetectorError as exc:
        from . import __version__
        from .session import out_of_memory

        if out_of_memory(exc):  # says nothing of the release: tried again next time
            return _as_published(official, model_name, f"its rewrite ran out of memory ({exc}); {TRIED_AGAIN}")
        with contextlib.suppress(OSError):  # a read-only cache: it is tried again next time, no harm
            (official / IMPORT_FAILED_MARKER).write_text(f"{__version__}\n{exc}\n", encoding="utf-8")
        return _as_published(official, model_name, f"the rewrite failed ({exc})")
    tell(f"{model_name} imported as {output} ({import_summary(record)} against the release)")
    return output


TRIED_AGAIN = "tried again on its next use"


def _as_published(official: Path, model_name: str, why: str) -> Path:
    """The release itself, having said why its rewrite for this CPU is not used."""
    tell(f"{model_name} runs as published: {why}", logging.WARNING)
    return official / MODEL_FILENAME


def import_failed_before(official: Path) -> bool:
    """Whether this package version already failed to import the release in official/."""
    from . import __version__

    try:
        return (official / IMPORT_FAILED_MARKER).read_text(encoding="utf-8").split("\n", 1)[0] == __version__
    except OSError:
        return False


def upgrade_cached_release(model_name: str, model_file: Path) -> Path:
    """A release an earlier version left plain in the cache (inference.yml beside it: an import never has
    one) moves into official/ and is imported, where the import can run; anything else is returned as is."""
    folder = model_file.parent
    if not (folder / INFERENCE_YML).is_file() or not releases_imported_here():
        return model_file
    official = folder / OFFICIAL_FOLDER
    try:
        official.mkdir(exist_ok=True)
        for filename in (INFERENCE_YML, MODEL_FILENAME):  # the .onnx last: official/ holding it is complete
            os.replace(folder / filename, official / filename)
    except OSError:  # read-only cache, or another process moved them first: use what is there now
        return model_file if model_file.is_file() else official / MODEL_FILENAME
    return import_release(model_name, official)
