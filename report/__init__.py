"""The evaluation report: one HTML page with tables and matplotlib figures per run."""
