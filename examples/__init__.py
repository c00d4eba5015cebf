"""The example catalog (a tiny Llama, its LoRA/(IA)³ adapters, a full fine-tune and lm-eval task files) and its builder.

``examples/catalog/`` is the committed build; ``examples.catalog_builder`` builds it (``example_catalog()``,
``build_example_catalog()``), ``examples.language`` defines the synthetic language and tasks, and
``examples.tasks_gen`` writes the task YAMLs and JSONL splits (stored once, in ``examples/catalog/tasks``).
Not installed with the package: import it from the repository root (tests run with ``pythonpath = ["."]``).
"""
