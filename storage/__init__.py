"""Storage side of the ComPEFT service: registry database, artifact stores, sources, publishers.

Nothing here runs at import time; open things through the factories:
:func:`storage.addresses.parse_address`, :func:`storage.sources.open_source`,
:func:`storage.stores.open_store`, :func:`storage.publishers.open_publisher` and
:func:`storage.registry.open_registry`.
"""
