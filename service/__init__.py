"""herpscore: bulk species identification for field photos (core, no Flask, no torch)."""
