"""The web manager and JSON API (/api/v1) of a running Goniec server.

`serve(admin, config, stop)` runs it in the current event loop until `stop`
is set; `create_app(admin, config)` gives the Starlette app (for tests).
Both take the `goniec.admin.service.Admin` facade, the only thing the pages
and the API talk to. See docs/manager.md.
"""

from goniec.admin.web.app import create_app
from goniec.admin.web.server import serve

__all__ = ["create_app", "serve"]
