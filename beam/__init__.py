"""Apache Beam jobs: raw interactions + item catalog → validated, time-split TFRecords."""
