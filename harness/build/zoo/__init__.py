"""The model zoo: built-in models with real weights and real data, and models users bring."""
