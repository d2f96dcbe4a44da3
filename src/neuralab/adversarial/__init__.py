"""Adversarial attacks, robust evaluation and adversarial training (see attacks.py)."""
