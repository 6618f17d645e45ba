"""Serving: Triton Inference Server launcher and the gRPC gateway backend services call."""
