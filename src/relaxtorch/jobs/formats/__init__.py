"""``relaxtorch formats``: the table of preset number formats and their limits."""
