"""Pure FHIR R4: validation, references, compartments, OperationOutcome. No I/O, no keys."""
