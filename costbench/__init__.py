"""costbench: measured answers to "which hardware, backend and compression should I deploy on?"."""

__version__ = "0.1.0"
