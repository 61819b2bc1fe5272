"""A live, read-only view of a study: optuna-dashboard on the study's Optuna journal, served
while the study runs (the journal is re-read on every request, so new trials show up).

Read-only: the dashboard's own writes (notes, trial states, deleting a study) are HTTP
requests other than GET and HEAD, and each is refused with 403 before it reaches the journal,
which only the study's searcher writes.
"""

from __future__ import annotations

import socketserver
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from raycert.errors import UserError

READ_METHODS = ("GET", "HEAD")
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def read_only(app: WSGIApp) -> WSGIApp:
    """``app`` answering only GET and HEAD; any other request gets 403."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in READ_METHODS:
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"raycert dashboard is read-only: the study's searcher owns its journal\n"]
        return app(environ, start_response)

    return guarded


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request (the page asks for several at once); no SO_REUSEADDR, so a
    port another server holds is refused."""

    daemon_threads = True
    allow_reuse_address = False


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per request: noise
        pass


def serve_dashboard(study_dir: Path, host: str, port: int) -> WSGIServer:
    """A server for the dashboard of the study in ``study_dir`` on ``host:port``, bound but not
    yet serving (``serve_forever`` does). ``UserError`` when the folder holds no journal or the
    port cannot be bound."""
    from optuna_dashboard import wsgi

    from raycert.studyfolder import STUDY_JSON, StudyDir, journal_storage

    store = StudyDir(str(study_dir.parent), study_dir.name)
    if not store.has(STUDY_JSON):
        raise UserError(
            f"{study_dir} is not a study folder (no {STUDY_JSON}); give <storage>/<name>"
        )
    if not store.journal_file().exists():
        raise UserError(f"{study_dir} has no Optuna journal yet: start the study first")
    app = read_only(wsgi(journal_storage(store)))
    try:
        return make_server(
            host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise UserError(
            f"cannot serve on {host}:{port} ({exc.strerror or exc}); pass another --port"
        ) from None
