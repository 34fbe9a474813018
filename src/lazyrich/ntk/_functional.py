"""Helpers shared by the torch.func-based code paths."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def no_fused_fastpaths():
    """Disable PyTorch's fused inference fast paths (``nn.TransformerEncoderLayer`` /
    ``nn.MultiheadAttention``) for the duration of a ``torch.func`` transform.

    Those fused kernels have no forward-mode AD or vmap rules; they are taken when no parameter
    requires grad, which is the case inside ``functional_call`` with detached parameters. The
    un-fused path computes the same function. Likewise ``scaled_dot_product_attention`` is
    restricted to its composite "math" backend, which supports forward-mode AD and vmap.
    The previous settings are restored on exit.
    """
    with contextlib.ExitStack() as stack:
        mha = getattr(torch.backends, "mha", None)
        if mha is not None and hasattr(mha, "set_fastpath_enabled"):
            old = mha.get_fastpath_enabled()
            mha.set_fastpath_enabled(False)
            stack.callback(mha.set_fastpath_enabled, old)
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        except ImportError:  # torch < 2.3
            pass
        yield
