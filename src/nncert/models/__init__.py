"""Model → graph IR."""

from .graph import Graph as Graph
from .graph import Node as Node
from .graph import sequential as sequential
from .load import load as load
