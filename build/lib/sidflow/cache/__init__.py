"""Teacher logit/feature cache (Parquet), the product's central artifact."""
