"""hiddencost: the hidden cost of model compression for visual prompting and linear probing."""

__version__ = "0.1.0"
