"""Example tilefuse plugins for an imaginary "acme" accelerator."""
