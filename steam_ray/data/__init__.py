"""Ray Data pipeline: sources -> clean -> split -> tokenize -> Parquet shards + manifest."""
