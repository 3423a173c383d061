"""Applications built on palm."""
