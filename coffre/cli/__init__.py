"""The ``coffre`` command line: its commands and their messages (the README lists them)."""
