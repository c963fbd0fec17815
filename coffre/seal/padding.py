"""The length a sealed body shows the host: its JSON padded to a few sizes.

Unpadded, a body's length tells records apart that its tokens do not (two centres' Slots
differ by the length of a name, a short Observation from one with a long note). The
plaintext is padded with spaces, JSON's own whitespace, so a padded body is the same JSON;
Coffre's bodies are canonical JSON, which never ends with one, so the padding comes off
exactly.

The sizes: a multiple of 256 bytes up to 4 KiB, then Padmé's (Nikitin et al., "Reducing
metadata leakage from encrypted files and communication with PURBs", PETS 2019): at most
about 12% more, and a length that tells at most O(log log L) bits.
"""

from __future__ import annotations

SMALLEST_STEP = 256
PAD = b" "


def padded_length(length: int) -> int:
    """The size a body of ``length`` bytes is padded to: the next multiple of its step,
    256 bytes below 4 KiB, then 2**(E - S) for E = ⌊log2 L⌋ and S = ⌊log2 E⌋ + 1."""
    if length <= 1:
        return SMALLEST_STEP
    exponent = length.bit_length() - 1
    step = max(SMALLEST_STEP, 1 << (exponent - exponent.bit_length()))
    return -(-length // step) * step


def pad(body: bytes) -> bytes:
    """``body`` (JSON) followed by as many spaces as its padded length asks."""
    return body + PAD * (padded_length(len(body)) - len(body))


def unpad(body: bytes) -> bytes:
    """The JSON a padded body holds: without its trailing spaces (a body sealed before
    Coffre padded has none)."""
    return body.rstrip(PAD)
