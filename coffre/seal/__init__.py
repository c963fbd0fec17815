"""The only user of ``cryptography.hazmat``: purpose keys, blind tokens, the record envelope,
the deterministic seal of what travels in URLs.

Everything here is a pure function of keys and bytes: no storage, no FHIR semantics.
"""

from coffre.seal.envelope import AeadEnvelope, Envelope, PlainEnvelope
from coffre.seal.keys import PurposeKeys, random_key
from coffre.seal.keywrap import unwrap_key, wrap_key

__all__ = [
    "AeadEnvelope",
    "Envelope",
    "PlainEnvelope",
    "PurposeKeys",
    "random_key",
    "unwrap_key",
    "wrap_key",
]
