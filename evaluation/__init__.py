"""Offline evaluation: HitRate@K and NDCG@10 by segment (all / warm / cold / tail)."""
