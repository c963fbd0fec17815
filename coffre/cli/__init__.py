"""The ``coffre`` command: init, serve, synth, import."""
