"""``relaxtorch hogwild``: Hogwild!/Buckwild! runs compared across worker counts and precisions."""
