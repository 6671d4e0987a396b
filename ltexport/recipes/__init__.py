"""Per-family defaults (JSON files beside this module), installed as package `ltexport.recipes`."""
