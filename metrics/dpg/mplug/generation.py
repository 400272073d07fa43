"""The official beam search of mPLUG's answer decoder (`TextGenerator`), with its length penalty."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from paintbench.metrics.dpg.mplug.configuration import END_ID, LENGTH_PENALTY_ALPHA, START_ID


# ------------------------------------------------------------------------------------------- beam search
@dataclass(frozen=True)
class Hypothesis:
    """A finished beam: token ids (start token first, end token included when emitted) and its
    length-penalised score, as ModelScope's TextGenerator stores them."""

    ids: tuple[int, ...]
    score: float


StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def length_penalty(step: int, alpha: float = LENGTH_PENALTY_ALPHA) -> float:
    """GNMT length penalty of TextGenerator: ((5 + (step + 1)) / 6) ** alpha, step counted from 0."""
    return ((5.0 + (step + 1)) / 6.0) ** alpha


def beam_search(
    step_logits: StepFn,
    batch_size: int,
    *,
    beam_size: int = 5,
    min_length: int = 1,
    max_length: int = 10,
    start_id: int = START_ID,
    end_id: int = END_ID,
    alpha: float = LENGTH_PENALTY_ALPHA,
    device: torch.device | str = "cpu",
) -> list[list[Hypothesis]]:
    """ModelScope's `TextGenerator._fast_translate_batch` (do_sample=False), rule for rule.

    `step_logits(alive_seq, row_items)` returns next-token logits [rows, vocab] for the alive rows;
    `row_items[r]` is the batch item row r belongs to (rows come in groups of `beam_size`, one group
    per unfinished item). Returns, per batch item, its finished hypotheses best first (at most
    `beam_size`). The rules reproduced, quirks included:

    - log-probabilities are `log(softmax(logits))`; the end token is banned (-1e20) while
      step < min_length; only beam 0 is alive at the first step;
    - candidates are ranked by cumulative log-prob / length_penalty(step); the kept cumulative score
      is that ranked value × length_penalty (float round trip included);
    - every candidate that emits the end token is recorded as finished, but an item stops only when
      its top beam emits it; other finished beams stay alive and keep extending;
    - at max_length every beam is finished; an item's finished hypotheses are sorted by score,
      highest first, ties in the order they were recorded.
    """
    device = torch.device(device)
    topk_log_probs = torch.tensor([0.0] + [float("-inf")] * (beam_size - 1), device=device).repeat(batch_size)
    batch_offset = torch.arange(batch_size, dtype=torch.long, device=device)
    beam_offset = torch.arange(0, batch_size * beam_size, step=beam_size, dtype=torch.long, device=device)
    alive_seq = torch.full((batch_size * beam_size, 1), start_id, dtype=torch.long, device=device)
    row_items = batch_offset.repeat_interleave(beam_size)
    hypotheses: list[list[tuple[float, tuple[int, ...]]]] = [[] for _ in range(batch_size)]
    results: list[list[Hypothesis]] = [[] for _ in range(batch_size)]

    for step in range(max_length):
        logits = step_logits(alive_seq, row_items)
        vocab = logits.size(-1)
        log_probs = torch.log(torch.softmax(logits.view(-1, vocab), dim=-1))
        if step < min_length:
            log_probs[:, end_id] = -1e20
        lp = length_penalty(step, alpha)
        log_probs += topk_log_probs.view(-1).unsqueeze(1)
        curr_scores = (log_probs / lp).reshape(-1, beam_size * vocab)
        topk_scores, topk_ids = curr_scores.topk(beam_size, dim=-1)
        topk_log_probs = topk_scores * lp

        topk_beam_index = torch.div(topk_ids, vocab, rounding_mode="floor")
        topk_ids = topk_ids.fmod(vocab)
        batch_index = topk_beam_index + beam_offset[: topk_beam_index.size(0)].unsqueeze(1)
        select = batch_index.view(-1)
        alive_seq = torch.cat([alive_seq.index_select(0, select), topk_ids.view(-1, 1)], -1)
        row_items = row_items.index_select(0, select)

        is_finished = topk_ids.eq(end_id)
        if step + 1 == max_length:
            is_finished.fill_(True)
        end_condition = is_finished[:, 0].eq(True)
        if is_finished.any():
            predictions = alive_seq.view(-1, beam_size, alive_seq.size(-1))
            scores_cpu = topk_scores.detach().float().cpu()
            preds_cpu = predictions.cpu()
            for i in range(is_finished.size(0)):
                b = int(batch_offset[i])
                if bool(end_condition[i]):
                    is_finished[i].fill_(True)
                for j in is_finished[i].nonzero().view(-1).tolist():
                    hypotheses[b].append((float(scores_cpu[i, j]), tuple(preds_cpu[i, j].tolist())))
                if bool(end_condition[i]):
                    best = sorted(hypotheses[b], key=lambda h: h[0], reverse=True)
                    results[b] = [Hypothesis(ids, score) for score, ids in best[:beam_size]]
            non_finished = end_condition.eq(False).nonzero().view(-1)
            if len(non_finished) == 0:
                break
            topk_log_probs = topk_log_probs.index_select(0, non_finished)
            batch_offset = batch_offset.index_select(0, non_finished)
            keep = (non_finished.unsqueeze(1) * beam_size + torch.arange(beam_size, device=device)).view(-1)
            row_items = row_items.index_select(0, keep)
            alive_seq = predictions.index_select(0, non_finished).view(-1, alive_seq.size(-1))
    return results
