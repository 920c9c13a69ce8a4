"""Configuration: TOML recipes read into frozen dataclasses, adapter names, and the recipe reference."""
