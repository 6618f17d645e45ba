"""tworec: a two-stage recommender (Beam data → TFRS two-tower retrieval → DCN ranker → Triton + gRPC)."""

__version__ = "0.1.0"
