"""Bridges to the engines people run NER inside; each needs its own optional extra."""
