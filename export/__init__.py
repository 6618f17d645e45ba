"""Exports: SavedModels, the Triton model repository, the ScaNN index and batch embeddings."""
