"""twinloop."""
