"""DuckDB persistence: the only module that writes SQL."""
