"""Semantic certification beyond norm balls (GCert, Yuan, Wang & Su, USENIX Security 2023):
segments in input or latent space (exact with ExactLine, or by bound propagation on the graph
over the segment parameter), quantitative robust-fraction bounds, geometric/photometric
transform sets, and generators with continuity and independent mutation directions."""

from .generative import VAEConfig as VAEConfig
from .generative import build_generator as build_generator
from .generative import save_generator as save_generator
from .latent import certify_latent_segment as certify_latent_segment
from .latent import certify_lines as certify_lines
from .latent import residual_decoder as residual_decoder
from .quantitative import QuantConfig as QuantConfig
from .quantitative import robust_fraction as robust_fraction
from .segments import LinePieces as LinePieces
from .segments import SegmentReport as SegmentReport
from .segments import certify_segment_exact as certify_segment_exact
from .segments import certify_segments_exact as certify_segments_exact
from .segments import exact_line as exact_line
from .segments import exact_lines as exact_lines
from .segments import segment_graph as segment_graph
from .segments import segment_problem as segment_problem
from .transforms import TransformConfig as TransformConfig
from .transforms import TransformSet as TransformSet
from .transforms import certify_transform as certify_transform
