"""The ``storage-migrate`` command line: parses, calls a command, renders its report, and is
the one place an error becomes a message and an exit code."""
