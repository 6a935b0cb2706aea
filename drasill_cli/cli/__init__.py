"""The `mesh` command line: a thin Typer layer that parses, calls the core and renders."""
