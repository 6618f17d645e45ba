"""Two-tower retrieval: MiniLM item tower, history-aware query tower, TFRS retrieval task, ScaNN."""
