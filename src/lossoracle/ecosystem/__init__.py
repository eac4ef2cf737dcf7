"""The ecosystem's implementations, one module per loss family (``ecosystem/<family>.py``).

Each module lists ``IMPLEMENTATIONS`` (:class:`lossoracle.catalog.Implementation`): third-party
callables judged under the convention they document, with small adapters to the canonical
signature where needed. Modules are discovered: a new family module needs no edit elsewhere.
"""
