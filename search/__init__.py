"""Personalised product search: a lexical leg (BM25), a semantic leg (the pretrained encoder's own
sentence space, indexed with ScaNN), their fusion, and a re-ranking with the shopper's state."""
