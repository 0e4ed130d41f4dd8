"""Metrics: classification (accuracy, mAP, mAUC, d'), retrieval, and statistics over seeds."""

from avbench.metrics.classification import classification_metrics, d_prime, mean_average_precision
from avbench.metrics.retrieval import retrieval_metrics, stratified_subset
from avbench.metrics.stats import mean_std_ci

__all__ = ["classification_metrics", "d_prime", "mean_average_precision", "retrieval_metrics",
           "stratified_subset", "mean_std_ci"]
