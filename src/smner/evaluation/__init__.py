"""Entity scoring, grounding and pointing metrics, error analysis, and evaluating a saved model."""
