"""The GPU side: models loaded once per process, dynamic batches, caption then score."""
