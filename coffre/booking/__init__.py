"""Booking: FHIR Schedule, Slot and Appointment, with no slot ever booked twice.

``slots``: what holds a slot and when a slot may be held, the rule the write path keeps
for every Appointment and Slot written; ``find`` and ``book``: the ``Appointment/$find``
and ``Appointment/$book`` operations' own logic (docs/booking.md).
"""
