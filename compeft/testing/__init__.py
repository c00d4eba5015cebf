"""Locally built fixtures: a tiny tokenizer and causal LM, trained adapters and lm-eval task files.

See ``compeft.testing.fixtures`` (``build_example_catalog``, ``example_catalog``) and
``compeft.testing.tasks_gen`` (the committed task YAMLs and JSONL splits).
"""
