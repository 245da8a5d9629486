"""``flowlab demo`` and the assembly of its report."""
