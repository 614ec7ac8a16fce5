"""One module per command: each opens what it needs, does its work through the engine, and
returns a report object for the CLI to render; none of them prints or exits."""
