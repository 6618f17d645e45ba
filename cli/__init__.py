"""The ``tworec`` command (``main``) and ``tworec pipeline``, the run that chains every stage."""
from tworec.cli.main import main

__all__ = ["main"]
