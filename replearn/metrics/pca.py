"""Principal components of n points in d dimensions by the cheapest method that stays bounded in both.

Three routes to the same subspace: the d×d covariance (exact, O(n·d² + d³)) when d is the small side, the
n×n Gram matrix X·Xᵀ (exact, O(n²·d + n³), the d×d matrix never formed) when n is, and a seeded randomised
SVD (Halko et al. 2011; O(n·d·q), memory O((n + d)·q)) when both exceed ``EXACT_LIMIT``. Nothing of size d×d
is ever formed above ``EXACT_LIMIT`` pixels, which is what made 96–224 px images unaffordable (a d×d
covariance is 4.6 GiB at 96² colour and eigen-decomposes in hours).
"""
from __future__ import annotations

import torch

# exact routes while the smaller side of the data is at most this: an eigh of 2048×2048 in float64 takes ≈ 5 s
# on one core (1024: ≈ 1 s; 4096: ≈ 20 s), and its matrix is 32 MiB
EXACT_LIMIT = 2048
RANDOMISED_PCA_OVERSAMPLING, RANDOMISED_PCA_ITERATIONS = 16, 6
# columns of the data converted to float64 at once by the Gram route (bounds its extra memory to n·chunk·8 B)
GRAM_CHUNK = 8192


def pca_method(n: int, d: int, exact_limit: int = EXACT_LIMIT) -> str:
    """Which route ``principal_components`` takes for n points in d dimensions: covariance, gram or randomised."""
    if d <= n and d <= exact_limit:
        return "covariance"
    if n < d and n <= exact_limit:
        return "gram"
    return "randomised"


def principal_components(x: torch.Tensor, dims: int, exact_limit: int = EXACT_LIMIT) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """(mean, d×q basis of the top q = min(dims, n, d) principal components) of the rows of ``x``, largest
    first, in ``x``'s dtype; each component's sign fixed so that its largest coordinate is positive. Columns
    beyond the centred data's rank (at most n − 1) are zero."""
    n, d = x.shape
    method = pca_method(n, d, exact_limit)
    if method == "randomised":
        return randomised_components(x.float(), dims)
    q = min(dims, n, d)
    if method == "covariance":
        xd = x.double()
        mean = xd.mean(0)
        centred = xd - mean
        _, vecs = torch.linalg.eigh(centred.T @ centred)
        basis = vecs[:, -q:].flip(1)
    else:
        mean, basis = gram_components(x, q)
    return mean.to(x.dtype), _fix_signs(basis).to(x.dtype)


def gram_components(x: torch.Tensor, q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 mean, d×q basis) from the eigenvectors U of the centred n×n Gram matrix: V = Xᵀ·U·S⁻¹ (exact,
    as the covariance's eigenvectors are, up to sign); built over column blocks so that at most n × GRAM_CHUNK
    values are held in float64 beside ``x``. Components with a zero eigenvalue get a zero column."""
    n, d = x.shape
    mean = torch.zeros(d, dtype=torch.float64)
    gram = torch.zeros(n, n, dtype=torch.float64)
    for lo in range(0, d, GRAM_CHUNK):
        block = x[:, lo:lo + GRAM_CHUNK].double()
        mean[lo:lo + GRAM_CHUNK] = block.mean(0)
        block = block - mean[lo:lo + GRAM_CHUNK]
        gram += block @ block.T
    values, vectors = torch.linalg.eigh(gram)
    values, vectors = values.flip(0)[:q], vectors.flip(1)[:, :q]
    tol = values[0].clamp_min(0) * max(n, d) * torch.finfo(torch.float64).eps if q else 0.0
    inverse_s = torch.where(values > tol, values.clamp_min(1e-300).rsqrt(), torch.zeros_like(values))
    scaled = vectors * inverse_s
    basis = torch.empty(d, q, dtype=torch.float64)
    for lo in range(0, d, GRAM_CHUNK):
        block = x[:, lo:lo + GRAM_CHUNK].double() - mean[lo:lo + GRAM_CHUNK]
        basis[lo:lo + GRAM_CHUNK] = block.T @ scaled
    return mean, basis


def randomised_components(x: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, D×dims basis of the top principal components) of the rows of ``x`` by randomised SVD (Halko et
    al. 2011, Alg. 4.4 and 5.1): the centring is applied as a rank-one correction, so nothing of the size of
    ``x`` is allocated. Seeded by its own generator (the same data always give the same basis, the global RNG
    is untouched); each component's sign is fixed so that its largest coordinate is positive."""
    mean = x.mean(0)
    rank = min(dims + RANDOMISED_PCA_OVERSAMPLING, *x.shape)

    def times(m: torch.Tensor) -> torch.Tensor:  # (x - mean) @ m
        return x @ m - mean @ m

    def transposed_times(m: torch.Tensor) -> torch.Tensor:  # (x - mean).T @ m
        return x.T @ m - torch.outer(mean, m.sum(0))

    probe = torch.randn(x.shape[1], rank, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    q = torch.linalg.qr(times(probe)).Q
    for _ in range(RANDOMISED_PCA_ITERATIONS):
        q = torch.linalg.qr(times(torch.linalg.qr(transposed_times(q)).Q)).Q
    _, _, vh = torch.linalg.svd(transposed_times(q).T, full_matrices=False)
    return mean, _fix_signs(vh[:dims].T)


def _fix_signs(basis: torch.Tensor) -> torch.Tensor:
    """Each column's sign chosen so that its largest-magnitude coordinate is positive (zero columns kept)."""
    if basis.numel() == 0:
        return basis
    signs = torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
    return basis * torch.where(signs == 0, 1.0, signs).to(basis.dtype)
