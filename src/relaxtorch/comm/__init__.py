"""Communication relaxations: compressors with error feedback, compressed all-reduce and
DDP hooks, CocktailSGD, decentralized gossip (D-PSGD, DeTAG, Moniqua) and a link model."""
from .link import LinkModel, parse_link
from .stats import CommStats
from .compressors import Cast, Compressor, Identity, Payload, QSGD, Sign, StatefulCompressor
from .sparsify import Compose, RandomK, TopK
from .feedback import ErrorFeedback
from .allreduce import allreduce
from .data_parallel import DataParallel
from .ddp_hook import CompressionHookState, ddp_comm_hook
from .cocktail import CocktailSGD
from .topology import Topology, complete, exponential, one_peer_exponential, ring, topology, torus
from .gossip import consensus_distance, gossip, neighbor_exchange
from .decentralized import DPSGD, DeTAG
from .moniqua import Moniqua

__all__ = ["CommStats", "LinkModel", "parse_link",
           "Cast", "CocktailSGD", "Compose", "CompressionHookState", "Compressor", "DataParallel",
           "ErrorFeedback", "Identity", "Payload", "QSGD", "RandomK", "Sign", "StatefulCompressor", "TopK",
           "allreduce",
           "ddp_comm_hook",
           "DPSGD", "DeTAG", "Moniqua", "Topology", "complete", "consensus_distance", "exponential", "gossip",
           "neighbor_exchange", "one_peer_exponential", "ring", "topology", "torus"]
