"""pytest plugin: collects crossgrad*.yaml suites and gives the `crossgrad` fixture (not yet built)."""
