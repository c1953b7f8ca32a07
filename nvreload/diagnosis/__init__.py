"""Pure functions: node state → findings → one recommended action."""
