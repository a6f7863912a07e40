"""Images ↔ discrete tokens: a k-means codebook over 4×4 RGB patches.

A 32×32 picture is cut into an 8×8 grid of 4×4 patches (48 numbers each, row by row); each patch becomes the
index of its nearest centroid, so a picture is 64 codes. Decoding pastes the centroids back.

The centroids are fitted by k-means (k-means++ start, Lloyd iterations) on the *distinct* patches of seeded
scenes: the black background patch dominates raw counts, and fitting on distinct patches spends the codes on
edges, where shapes differ.
"""

from __future__ import annotations

import torch

__all__ = ["Codebook", "PATCH"]

PATCH = 4  # side of a patch, in pixels


class Codebook:
    """Patch centroids and the encode/decode maps.

    Args:
        centroids: ``(num_codes, PATCH * PATCH * 3)`` float, pixel values in 0–255, channels last.
        image_size: side of the square pictures it encodes.
    """

    def __init__(self, centroids: torch.Tensor, image_size: int = 32):
        self.centroids = centroids.float()
        self.image_size = image_size

    @property
    def num_codes(self) -> int:
        return self.centroids.shape[0]

    @property
    def grid(self) -> int:
        """Patches per side (8 for 32×32 pictures)."""
        return self.image_size // PATCH

    @property
    def tokens_per_image(self) -> int:
        return self.grid * self.grid

    # -- patches ----------------------------------------------------------------------------------------
    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, 3)`` pictures → ``(N, grid * grid, PATCH * PATCH * 3)`` float patches, row by row."""
        n, g = images.shape[0], self.grid
        x = images.float().reshape(n, g, PATCH, g, PATCH, 3)  # (N, gy, py, gx, px, C)
        x = x.permute(0, 1, 3, 2, 4, 5)  # (N, gy, gx, py, px, C)
        return x.reshape(n, g * g, PATCH * PATCH * 3)  # (N, tokens, patch_dim)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, 3)`` pictures (uint8 or float 0–255) → ``(N, tokens)`` int64 codes."""
        x = self.patches(images)  # (N, tokens, D)
        return _nearest(x.reshape(-1, x.shape[-1]), self.centroids).view(x.shape[0], -1)  # (N, tokens)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``(N, tokens)`` codes → ``(N, H, W, 3)`` uint8 pictures."""
        n, g = codes.shape[0], self.grid
        x = self.centroids[codes.long()]  # (N, tokens, D)
        x = x.reshape(n, g, g, PATCH, PATCH, 3).permute(0, 1, 3, 2, 4, 5)  # (N, gy, py, gx, px, C)
        return x.reshape(n, self.image_size, self.image_size, 3).round().clamp(0, 255).to(torch.uint8)

    # -- fitting ----------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, images: torch.Tensor, num_codes: int, *, seed: int = 0, iterations: int = 30
    ) -> Codebook:
        """Fit ``num_codes`` centroids by k-means on the distinct patches of ``images`` ``(N, H, W, 3)`` uint8.

        Args:
            images: the pictures to fit on.
            num_codes: how many centroids; fewer distinct patches than this keeps them all.
            seed: seeds the k-means++ start.
            iterations: Lloyd iterations after the start.
        """
        probe = cls(torch.zeros(1, PATCH * PATCH * 3), image_size=images.shape[1])
        points = torch.unique(probe.patches(images).reshape(-1, PATCH * PATCH * 3), dim=0)  # (P, D)
        if points.shape[0] <= num_codes:
            return cls(points, image_size=images.shape[1])
        generator = torch.Generator().manual_seed(seed)
        centroids = _kmeans_plus_plus(points, num_codes, generator)
        for _ in range(iterations):
            assign = _nearest(points, centroids)  # (P,)
            sums = torch.zeros_like(centroids).index_add_(0, assign, points)
            counts = torch.bincount(assign, minlength=num_codes).float()
            empty = counts == 0
            centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        return cls(centroids, image_size=images.shape[1])


def _nearest(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean) for each of ``points`` (P, D) → (P,)."""
    # |x - c|² = |x|² - 2 x·c + |c|², and |x|² does not change which c is nearest
    return (centroids.pow(2).sum(-1) - 2 * points @ centroids.T).argmin(-1)  # (P, K) → (P,)


def _kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ start: each new centroid drawn with probability ∝ squared distance to the nearest chosen one."""
    first = torch.randint(points.shape[0], (1,), generator=generator)
    chosen = [points[first[0]]]
    nearest = ((points - chosen[0]) ** 2).sum(-1)  # (P,)
    for _ in range(k - 1):
        index = torch.multinomial(nearest / nearest.sum(), 1, generator=generator)[0]
        chosen.append(points[index])
        nearest = torch.minimum(nearest, ((points - points[index]) ** 2).sum(-1))
    return torch.stack(chosen)  # (k, D)
