"""A `detect serve` process around the application, for uvicorn: the package's log lines in uvicorn's format (every
process), and the factory each --workers process builds its application with."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from fastapi import FastAPI

from ..errors import DetectorError
from .config import CONFIG_ENV_VAR, ServeConfig

logger = logging.getLogger("detector.serve")


def log_beside_uvicorn(level: int = logging.INFO) -> None:
    """The package's log lines (each refusal with its logId, dropped requests, errors) on stderr in uvicorn's
    format, for `detect serve`: without a handler, Python shows only warnings and errors, unformatted."""
    from uvicorn.logging import DefaultFormatter

    package = logging.getLogger("detector")
    for handler in list(package.handlers):  # the command line's own echo of warnings: one line each, not two
        if getattr(handler, "echoes_for_the_command_line", False):
            package.removeHandler(handler)
    # python-multipart's own warnings (a malformed upload, answered 400 here) in the same format, not Python's
    # bare last-resort lines
    for logger in (package, logging.getLogger("python_multipart"), logging.getLogger("multipart")):
        if not any(getattr(handler, "detect_serve", False) for handler in logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
            handler.detect_serve = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
            logger.propagate = False
    package.setLevel(level)


def app_from_environment() -> FastAPI:
    """uvicorn's factory for worker processes (--workers N): the config comes in CONFIG_ENV_VAR.

    A worker that cannot load the model (a file replaced or removed since the command loaded it, say) says why in
    one line, writes it to the config's startup_failure_file for the command, and exits with uvicorn's
    startup-failure status, on which uvicorn's supervisor stops the server. It ended in a traceback, and the
    supervisor started another worker, and another, for good: the port open, nothing answering.
    """
    import uvicorn.config

    # looked up at each call: bound when this module is first imported, a test's stand-in for it would stay for good
    from .app import create_app

    # uvicorn's startup-failure status: its supervisor stops the server on it from uvicorn 0.50 (Python 3.10 and
    # later); the older uvicorns Python 3.9 gets (up to 0.39) have no such constant and start another worker, as
    # they did before this rule (importing the name failed every worker there)
    startup_failure = getattr(uvicorn.config, "STARTUP_FAILURE", 3)
    log_beside_uvicorn()
    config = ServeConfig.from_json(os.environ.get(CONFIG_ENV_VAR) or "{}")
    try:
        return create_app(config)
    except Exception as exc:  # any error here fails every worker started after this one the same way
        message = f"a worker could not load the model: {exc}"
        logger.error(message, exc_info=not isinstance(exc, DetectorError))  # a library error says all in its message
        if config.startup_failure_file:
            Path(config.startup_failure_file).write_text(message, encoding="utf-8")
        sys.exit(startup_failure)
