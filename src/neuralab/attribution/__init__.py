"""Attributions (Captum), faithfulness metrics and their rendering (see images.py, texts.py)."""
