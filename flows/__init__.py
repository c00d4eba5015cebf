"""Prefect 3 flows of the ComPEFT service: crawl a catalog, compress on GPU workers, register, publish.

Orchestration only: every task is one call into ``compeft`` or ``storage`` and tasks exchange
references (URIs, paths, ids), never tensors. Importing this package does not import Prefect, so
``flows.cli`` can configure Prefect's environment first.
"""
