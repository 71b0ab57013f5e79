"""Floor 11: the vaekit command: the command table (main), the parser, and the commands by group, each imported when it runs."""
