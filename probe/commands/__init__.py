"""One module per ``probe`` verb; see ``probe._cli.COMMANDS``."""
