"""Git deploys (SPEC 4): sources, release layout, the build pipeline, deploy keys, history.

A synchronous library with no imports from corral.core, corral.panel or corral.cli; the
daemon runs it in a thread. Import the submodules directly (this package imports nothing).
"""
