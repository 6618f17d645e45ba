"""Ranking: a TFRS DCN-v2 model that re-orders retrieved candidates; served by Triton."""
