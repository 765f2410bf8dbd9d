"""How `mailer serve` (and `mailer run`) have uvicorn serve the endpoint (tracking/serve.py)."""

from __future__ import annotations

import logging

from mailer.tracking.serve import configure
from mailer.workspace import Workspace
from tests.tracking.conftest import free_port


def test_uvicorn_formats_no_access_line_for_each_request(workspace: Workspace) -> None:
    """At level warning none of uvicorn's access lines is written; with its access logger
    still attached, uvicorn would format one for every request all the same."""
    configure(workspace, "127.0.0.1", free_port())
    assert not logging.getLogger("uvicorn.access").hasHandlers()
