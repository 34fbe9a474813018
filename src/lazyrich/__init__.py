"""lazyrich: measure, explain and reproduce the learning dynamics of neural networks.

Layers (data flows one way, lower never imports higher):
``ntk`` -> ``theory`` -> ``models``/``data`` -> ``dynamics`` -> ``experiments`` -> ``plots``/``cli``/``sweep``.
"""

__version__ = "0.1.0"
