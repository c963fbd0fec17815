"""Coffre: a FHIR R4 health-data platform whose host stores only sealed records."""

__version__ = "0.1.0"
