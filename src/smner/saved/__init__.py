"""Saved model folders: their files and checks, model cards, Hub ids."""
