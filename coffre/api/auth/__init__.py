"""SMART on FHIR authorisation: scopes and the access decision, the registry of clients
and users, the built-in authorisation server, external issuers, and the middleware that
authenticates every /fhir request (docs/access.md)."""

from coffre.api.auth.authority import Authority, AuthSettings
from coffre.api.auth.endpoints import auth_routes, smart_routes
from coffre.api.auth.middleware import Authenticate
from coffre.api.auth.scopes import Principal

__all__ = ["AuthSettings", "Authenticate", "Authority", "Principal", "auth_routes", "smart_routes"]
