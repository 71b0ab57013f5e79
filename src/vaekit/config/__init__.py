"""Floor 4: the options (one field per option: type, default, bounds, help) and the defaults chosen from the data."""
