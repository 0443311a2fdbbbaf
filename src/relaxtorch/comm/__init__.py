"""Communication relaxations: compressors with error feedback, compressed all-reduce and
DDP hooks, CocktailSGD, decentralized gossip (D-PSGD, DeTAG, Moniqua) and a link model."""
from .link import LinkModel, parse_link
from .stats import CommStats

__all__ = ["CommStats", "LinkModel", "parse_link"]
