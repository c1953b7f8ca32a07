"""Human output (rich, to stderr). Imported only when a human is reading."""
