"""The Processor: a post becomes words, spans, pixels and image statuses; posts become batches."""
