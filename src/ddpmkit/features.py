"""Feature extractors for sample-quality measures, kept apart from the pure metrics.

`DigitsFeatures` is a small classifier trained on scikit-learn's digits (the embedded
default data), in about a second and deterministically: its hidden layer gives
features for a Fréchet distance, its output a class confidence. It is a digits-only
stand-in for Inception features, and every number made with it says so.
"""

from __future__ import annotations

import numpy as np

from . import metrics

NAME = "digits-mlp-64-128-10"  # what a number was measured with


class DigitsFeatures:
    """A 64-128-10 ReLU MLP fitted to all 1,797 digits (8x8, grey, 0..255 scale)."""

    def __init__(self, seed: int = 0):
        from sklearn.datasets import load_digits
        from sklearn.neural_network import MLPClassifier

        digits = load_digits()
        self.real = np.round(digits.images * (255 / 16)).astype(np.uint8)  # [1797, 8, 8]
        self.clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=400, random_state=seed)
        self.clf.fit(self._flat(self.real), digits.target)

    @staticmethod
    def _flat(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 4:  # [N, H, W, C]
            if images.shape[1:] != (8, 8, 1):
                raise ValueError(f"digits features take 8x8 grey images, got shape {images.shape[1:]}")
            images = images[..., 0]
        return images.reshape(len(images), 64).astype(np.float64) / 255.0

    def features(self, images: np.ndarray) -> np.ndarray:
        """Hidden-layer activations [N, 128] of uint8 images [N, 8, 8(, 1)]."""
        x = self._flat(images)
        return np.maximum(0.0, x @ self.clf.coefs_[0] + self.clf.intercepts_[0])

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.clf.predict_proba(self._flat(images))

    def quality(self, images: np.ndarray) -> dict[str, float]:
        """Fréchet distance to the real digits in these features (lower is better), the mean
        top-class confidence, and the entropy (nats) of the predicted-class histogram
        (log 10 ≈ 2.30 when every digit is drawn equally often)."""
        probs = self.predict_proba(images)
        hist = np.bincount(probs.argmax(1), minlength=10) / len(probs)
        return {
            "frechet_distance": metrics.frechet_distance(self.features(images), self.features(self.real)),
            "confidence": float(probs.max(1).mean()),
            "class_entropy": float(-(hist[hist > 0] * np.log(hist[hist > 0])).sum()),
            "num_samples": len(probs),
        }
