"""SMART on FHIR authorisation: scopes and the access decision, the registry of clients
and users, the built-in authorisation server, external issuers, and the middleware that
authenticates every /fhir request (docs/access.md)."""
