"""Set values that are not the mean of per-pair values (issue #22 item 6): the aggregation hook a metric
declares (`ProviderSpec.set_value`), against the official formula written out."""

from __future__ import annotations

import pytest


def test_a_set_value_hook_gives_torchmetrics_clipscore_compute_not_the_mean_of_clamped_pairs():
    """torchmetrics' CLIPScore.compute() over a set is max(mean of the unclamped 100·cos, 0)
    (torchmetrics/multimodal/clip_score.py: `torch.max(self.score / self.n_samples, 0)`); the harness
    used to average the per-pair clamped values (a set with negative cosines: 0.371 vs 0.000)."""
    from paintbench import metrics
    from paintbench.harness.aggregate import aggregate_metric

    unclamped = [12.0, -30.0, 5.0, -9.0]
    records = [{"prompt_id": str(i), "sample_index": 0, "value": max(u, 0.0), "details": {"score_unclamped": u}}
               for i, u in enumerate(unclamped)]
    cats = {str(i): "c" for i in range(4)}
    plain = aggregate_metric(records, cats, aggregation="mean", n_resamples=200)
    spec = metrics.spec("clipscore-torchmetrics")
    official = aggregate_metric(records, cats, aggregation="mean", n_resamples=200, set_value=spec.set_value)
    torchmetrics_compute = max(sum(unclamped) / len(unclamped), 0.0)           # their formula, written out
    assert plain["value"] == pytest.approx(17 / 4)
    assert official["value"] == torchmetrics_compute == 0.0
    assert official["ci"][0] >= 0.0 and official["categories"]["c"]["value"] == 0.0
    positive = [{**r, "details": {"score_unclamped": abs(r["details"]["score_unclamped"])}, "value": abs(
        r["details"]["score_unclamped"])} for r in records]
    assert aggregate_metric(positive, cats, aggregation="mean", n_resamples=200, set_value=spec.set_value)["value"] \
        == pytest.approx(sum(abs(u) for u in unclamped) / 4)                      # no negatives: the same mean
    assert metrics.spec("clipscore").set_value is None                          # Hessel's is a per-pair mean
