"""Tabular benchmarks of AdaLoRA trials (issue #34): the table file format and the replay harness."""
