"""The one training loop, its recipes, and the suite runner."""
