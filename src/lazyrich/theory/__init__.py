"""lazyrich.theory: the papers' exact results in closed form (pure NumPy/SciPy math, no I/O).

* :mod:`~lazyrich.theory.single_neuron` -- Kunin et al., single-neuron linear network: exact
  gradient flow, basins, M(beta, delta), potential Phi_delta, Theorem 1 implicit bias.
* :mod:`~lazyrich.theory.linear_networks` -- Kunin et al., wide and deep linear networks:
  conserved Delta, M as a Kronecker sum, Theorems 2-3, self-consistent beta dynamics, Q(beta).
* :mod:`~lazyrich.theory.piecewise_linear` -- Kunin et al., two-layer piecewise-linear nets:
  delta_k, mu_k, beta_hat_k, C, M_k and the NTK.
* :mod:`~lazyrich.theory.early_time` -- Hu et al., early-time linear surrogate: zeta, nu,
  theta0..2, feature maps psi1, psi2, psi, kernels Theta^lin and Theta1(W).
* :mod:`~lazyrich.theory.phase_diagram` -- Luo et al., kappa, kappa', gamma, gamma', Table 1,
  regimes, RD, S_w, condensation features.
"""

from . import early_time, linear_networks, phase_diagram, piecewise_linear, single_neuron

__all__ = ["single_neuron", "linear_networks", "piecewise_linear", "early_time", "phase_diagram"]
