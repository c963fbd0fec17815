"""The patient portal under /portal: server-rendered pages in French and English, plain
HTML that works without JavaScript (docs/access.md, "The patient portal")."""

from coffre.api.portal.frame import error_page
from coffre.api.portal.views import portal_routes

__all__ = ["error_page", "portal_routes"]
