// Placeholder: the deterministic kernels land here.
