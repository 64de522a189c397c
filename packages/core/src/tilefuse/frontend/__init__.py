"""Frontend: FX graph in, lowered IR out (AOTAutograd, decompositions, lowerings)."""
