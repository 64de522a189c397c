"""Toy third-party plugins for tilefuse's tests. Imports only ``tilefuse.plugin``."""
