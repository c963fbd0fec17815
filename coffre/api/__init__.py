"""The FHIR R4 REST API (Starlette): routes, content negotiation, errors as OperationOutcomes."""

from coffre.api.app import create_app

__all__ = ["create_app"]
