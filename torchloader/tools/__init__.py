"""The command line (``torchloader inspect|pack|verify|bench|env``) and what it measures."""
