"""raycert: certified-robust classifiers that stay accurate."""
