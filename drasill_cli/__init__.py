"""drasill-cli: a serverless mesh for AI coding agents on one machine.

The package is a library first: everything `mesh` does is reachable from Python through
`drasill_cli.mesh.Mesh` and the feature modules (agents, messages, tasks, locks, ...). The
Typer layer in `drasill_cli.cli` only parses, calls the core and renders.
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
