"""The web dashboard (`mesh dashboard`): needs the optional extra `drasill-cli[web]`."""
