"""Sequence kernels: one folder per op.

Each op lives in its own folder (``clframe/kernels/<op>/``) with

- ``naive.py``: plain PyTorch, a readable time loop; the ground truth every fast kernel is tested against
  (forward, final state and gradients). It runs on any device and in float64 (gradcheck);
- one module per fast kernel beside it (e.g. ``fla.py``): a thin wrapper around a kernel that a well-kept
  library provides, adapting shapes, scaling and state layout only, never a rewrite of the kernel;
- ``__init__.py``: the op itself, with ``backend="auto"`` choosing the fast kernel where it applies and the
  naive loop elsewhere.

Triton and the kernel libraries are imported lazily, inside the functions that call them: importing
``clframe`` or ``clframe.kernels.*`` imports neither Triton nor the libraries, and does not initialise CUDA.

Shapes follow clframe's convention ``[B, T, H, D]`` (batch, time, heads, features).
"""
