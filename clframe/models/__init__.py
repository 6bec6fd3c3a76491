"""Models: backbones, heads and hypernetworks (each a registry package), and their initialisation."""
