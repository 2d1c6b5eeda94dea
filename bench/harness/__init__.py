"""The measuring side of the benchmark: services, the consumer, process figures, stats, reports."""
