"""Hooks in the agent CLIs (Claude Code, Codex, Gemini CLI, Copilot CLI): the core layer.

`mesh hook CLI EVENT` reads the CLI's JSON payload on stdin and answers in that CLI's protocol
(contract: "Agents held by the mesh"). This package keeps that apart from the Typer layer so
the hook path stays fast (`run.main` imports no typer, rich, pydantic nor a driver it does not
need):

- `events`: the neutral event and answer every adapter speaks;
- `protocols`: per CLI, its payload parsed into an `Event`, and an `Answer` rendered as its
  stdout JSON and exit code;
- `patch`: the paths of a Codex `apply_patch` patch;
- `identity`: who the hook acts as (`$DRASILL_AGENT`, else an ancestor process registered here);
- `decide`: what the mesh does for each event (register, lock, deliver mail, hold a stop);
- `settings`: the mesh's entries merged into (and removed from) each CLI's settings file;
- `run`: the entry point (`main`), which never raises and never blocks an edit by failing.
"""
