"""Command-line interface: ``dipo demo | train | eval | assets``."""
