"""Beam test pipelines on a named runner: the product's local runner (beam/pipeline.py
LOCAL_RUNNER), never the DirectRunner, which first tries to download the Prism runner."""
from apache_beam.testing.test_pipeline import TestPipeline

from tworec.beam.pipeline import LOCAL_RUNNER


def test_pipeline(**options) -> TestPipeline:
    return TestPipeline(runner=LOCAL_RUNNER, **options)


test_pipeline.__test__ = False  # a factory, not a test
