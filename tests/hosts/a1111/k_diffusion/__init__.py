# Stand-in for crowsonkb/k-diffusion @ ab527a9a as A1111 v1.10.1 uses it (external.py, sampling.py).
from . import external, sampling  # noqa: F401
