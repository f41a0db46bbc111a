"""Plant known bugs in a copy of the project, one at a time, and check that the suite catches every one.

The suite's regression guard for its own teeth, beside mutation testing (``tox -e mutation``): mutants are random
one-token edits, these are the realistic bugs the project's claims are about (a Gal mask redrawn at every step, a
vocabulary that sees the test split, a run labelled bf16 that ran in fp32, ...). Each plant is a small textual
patch (file, old text, new text) and the claim it breaks; the tool copies the project to a temporary folder once,
checks that the relevant test files pass there unpatched, then applies each plant alone, runs its test files and
restores the file.

A plant is **caught** when pytest reports failing tests (exit 1); **missed** when they all pass; an **error** when
pytest could not run them (exit 2-5: the plant broke imports, or the files moved); **stale** when its old text no
longer occurs exactly once (the code changed: update the plant). Exit status 0 only when every plant is caught.

    python tools/plant.py                 # every plant (~30 min on a busy 2-core box: ~45 s a plant of the
                                          # training core, ~10 s one of the ablation harness)
    python tools/plant.py --list          # names, files and claims
    python tools/plant.py gal-mask-redrawn-every-step vocab-sees-val-and-test   # a few by name

Tests run single-threaded (OMP_NUM_THREADS=1) with the derandomized ``ci`` Hypothesis profile, so a verdict is
reproducible; they stop at the first failure (-x) and Hypothesis does not shrink it (the copy's conftest.py gets a
profile without the shrink phase; the project's own files are never written).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("rnnreg", "tests", "conftest.py", "pyproject.toml")  # all the suite needs; tools, runs and caches stay


@dataclass(frozen=True)
class Plant:
    name: str
    claim: str  # the project claim the bug breaks
    path: str  # file, relative to the project root
    old: str  # text that must occur exactly once
    new: str
    tests: tuple[str, ...]  # test files expected to catch it


LAYERS, MODEL, STEP, FIT, DATA, CONFIG, CLI = (
    "rnnreg/layers.py",
    "rnnreg/model.py",
    "rnnreg/step.py",
    "rnnreg/fit.py",
    "rnnreg/data/corpus.py",
    "rnnreg/config.py",
    "rnnreg/cli.py",
)
STATS, ABLATION, SWEEP, REPORT, FSIO = (
    "rnnreg/stats.py",
    "rnnreg/ablation.py",
    "rnnreg/sweep.py",
    "rnnreg/report.py",
    "rnnreg/fsio.py",
)
T_ORACLE, T_LEAKAGE, T_IDENTITY, T_SCHEDULER, T_DURABILITY = (
    "tests/test_report_oracle.py",
    "tests/test_ablation_leakage.py",
    "tests/test_run_identity.py",
    "tests/test_sweep_scheduler.py",
    "tests/test_fsio_durability.py",
)
T_LAYERS, T_MODEL, T_STEP, T_FIT, T_DATA, T_CONFIG, T_CLI = (
    "tests/test_layers.py",
    "tests/test_model.py",
    "tests/test_step.py",
    "tests/test_fit.py",
    "tests/test_data_corpus.py",
    "tests/test_config.py",
    "tests/test_cli.py",
)

PLANTS: tuple[Plant, ...] = (
    # ---- issue 11: bugs that passed the whole suite before it
    Plant(
        "gal-mask-redrawn-every-step",
        "Gal recurrent dropout: one (sequence, unit) mask reused at every time step",
        LAYERS,
        "        h_in = h if h_mask is None else h * h_mask\n",
        "        h_in = h if h_mask is None else h * dropout_mask((B, H), recurrent_p, like=h, generator=generator)\n",
        (T_LAYERS,),
    ),
    Plant(
        "model-embedding-dropout-element-wise",
        "the model's embedding dropout drops word types (one mask per word type for the batch)",
        MODEL,
        "        x = self.embed_drop(x, tokens)  # (B, T, E)\n",
        "        x = nn.functional.dropout(x, self.cfg.embed_p, self.training)  # (B, T, E)\n",
        (T_MODEL,),
    ),
    Plant(
        "model-input-dropout-element-wise",
        "the model's input dropout is locked: one mask per (sequence, feature), constant over time",
        MODEL,
        "        x = self.input_drop(x)  # (B, T, E)\n",
        "        x = nn.functional.dropout(x, self.cfg.input_p, self.training)  # (B, T, E)\n",
        (T_MODEL,),
    ),
    Plant(
        "gal-mask-shared-by-the-batch",
        "Gal recurrent dropout: one mask per sequence (and unit), not one for the whole batch",
        LAYERS,
        "        h_mask = dropout_mask((B, H), recurrent_p, like=h, generator=generator)",
        "        h_mask = dropout_mask((1, H), recurrent_p, like=h, generator=generator)",
        (T_LAYERS,),
    ),
    Plant(
        "model-hidden-dropout-element-wise",
        "the model's dropout between layers is locked: one mask per (sequence, feature), constant over time",
        MODEL,
        "                x = self.hidden_drop(torch.cat(outs, dim=2))  # (B, T, D*H)\n",
        "                x = nn.functional.dropout(torch.cat(outs, dim=2), self.cfg.hidden_p, self.training)\n",
        (T_MODEL,),
    ),
    Plant(
        "model-input-mask-per-sequence-only",
        "the model's input dropout: one mask per (sequence, feature), not one keep/drop per sequence",
        MODEL,
        "        x = self.input_drop(x)  # (B, T, E)\n",
        "        x = x * nn.functional.dropout(x.new_ones(x.shape[0], 1, 1), self.cfg.input_p, self.training)\n",
        (T_MODEL,),
    ),
    Plant(
        "model-input-mask-shared-by-the-batch",
        "the model's input dropout: one mask per sequence, not one for the whole batch",
        MODEL,
        "        x = self.input_drop(x)  # (B, T, E)\n",
        "        x = x * nn.functional.dropout(x.new_ones(1, 1, x.shape[2]), self.cfg.input_p, self.training)\n",
        (T_MODEL,),
    ),
    Plant(
        "vocab-sees-val-and-test",
        "the vocabulary fit uses is built on the training split only",
        FIT,
        "    vocab = build_vocab(corpus, cfg)\n",
        "    texts = (text for split in (corpus.train, corpus.val, corpus.test) for text, _ in split)\n"
        "    vocab = Vocab.build(texts, min_freq=cfg.min_freq, max_size=cfg.max_vocab)\n",
        (T_FIT,),
    ),
    Plant(
        "vocab-sees-val",
        "the vocabulary fit uses is built on the training split only",
        FIT,
        "    vocab = build_vocab(corpus, cfg)\n",
        "    texts = (text for split in (corpus.train, corpus.val) for text, _ in split)\n"
        "    vocab = Vocab.build(texts, min_freq=cfg.min_freq, max_size=cfg.max_vocab)\n",
        (T_FIT,),
    ),
    Plant(
        "build-vocab-sees-test",
        "data.build_vocab counts the training split only",
        DATA,
        "    return Vocab.build((text for text, _ in corpus.train), min_freq=cfg.min_freq, max_size=cfg.max_vocab)\n",
        "    texts = (text for split in (corpus.train, corpus.test) for text, _ in split)\n"
        "    return Vocab.build(texts, min_freq=cfg.min_freq, max_size=cfg.max_vocab)\n",
        (T_DATA, T_FIT),
    ),
    Plant(
        "autocast-probe-always-no",
        "rnn_supports_autocast reports what the RNN kernel really runs (bf16 is not silently switched off)",
        LAYERS,
        "    return out.dtype == dtype\n",
        "    return False\n",
        (T_LAYERS, T_MODEL),
    ),
    Plant(
        "run-labelled-as-requested",
        "a run is labelled with the precision that ran, never the one requested",
        FIT,
        '    run.history.amp = tc.amp if run.history.low_precision else "off"\n',
        "    run.history.amp = tc.amp\n",
        (T_FIT,),
    ),
    Plant(
        "locked-mask-drawn-over-padded-width",
        "no mask depends on the padded width T",
        LAYERS,
        "    return x * dropout_mask((B, 1, D), p, like=x, generator=generator)",
        "    return x * dropout_mask(x.shape, p, like=x, generator=generator)[:, :1]",
        (T_LAYERS,),
    ),
    Plant(
        "override-lowercases-strings",
        "every --set key takes its value as typed",
        CONFIG,
        "    return text\n",
        "    return text.lower()\n",
        (T_CONFIG,),
    ),
    Plant(
        "fit-trains-on-shifted-labels",
        "fit learns the tiny task for any seed",
        FIT,
        "        stats = train_step(run.model, batch, run.optimizer, run.scaler, tc)\n",
        "        batch = type(batch)(batch.tokens, batch.lengths, batch.labels.roll(1))\n"
        "        stats = train_step(run.model, batch, run.optimizer, run.scaler, tc)\n",
        (T_FIT,),
    ),
    Plant(
        "evaluate-swaps-label-ids",
        "rnnreg evaluate reports the checkpoint's accuracy on the file",
        FIT,
        "    remap = {i: loaded.label_names.index(name) for i, name in enumerate(corpus.label_names)}\n",
        "    remap = {i: len(loaded.label_names) - 1 - i for i, _ in enumerate(corpus.label_names)}\n",
        (T_CLI,),
    ),
    # ---- issue 3: layer and model bugs its tests were shown to catch
    Plant(
        "locked-mask-on-wrong-axis",
        "locked dropout: one mask per (sequence, feature), constant along time",
        LAYERS,
        "    return x * dropout_mask((B, 1, D), p, like=x, generator=generator)",
        "    return x * dropout_mask((1, x.shape[1], D), p, like=x, generator=generator)",
        (T_LAYERS,),
    ),
    Plant(
        "weight-drop-misses-reverse",
        "weight drop covers weight_hh of every layer and both directions",
        LAYERS,
        'if name.startswith("weight_hh")]',
        'if name.startswith("weight_hh") and not name.endswith("_reverse")]',
        (T_LAYERS,),
    ),
    Plant(
        "weight-drop-training-hard-coded",
        "eval mode is deterministic: no dropout outside training",
        LAYERS,
        "weight_drop(getattr(self.rnn, name), self.weight_p, training=self.training, generator=generator)",
        "weight_drop(getattr(self.rnn, name), self.weight_p, training=True, generator=generator)",
        (T_LAYERS, T_MODEL),
    ),
    Plant(
        "embedding-mask-per-position",
        "embedding dropout drops whole word types",
        LAYERS,
        "    mask = dropout_mask((num_embeddings, 1), p, like=embedded, generator=generator)  # (V, 1)\n"
        "    return embedded * mask[tokens]  # (B, T, D) * (B, T, 1)\n",
        "    mask = dropout_mask((*tokens.shape, 1), p, like=embedded, generator=generator)  # (B, T, 1)\n"
        "    return embedded * mask  # (B, T, D) * (B, T, 1)\n",
        (T_LAYERS, T_MODEL),
    ),
    Plant(
        "reverse-direction-flips-whole-tensor",
        "padding invariance: the reverse direction starts at each sequence's last real token",
        MODEL,
        "                x_rev = reverse_within_lengths(x, lengths, flip)\n",
        "                x_rev = x.flip(1)\n",
        (T_MODEL,),
    ),
    Plant(
        "mean-pooling-over-all-steps",
        "pads never contribute to pooling",
        LAYERS,
        '    if how == "mean":\n        return masked_mean(x, lengths)\n',
        '    if how == "mean":\n        return x.mean(dim=1)\n',
        (T_LAYERS, T_MODEL),
    ),
    Plant(
        "rows-not-unsorted",
        "logits come back in the caller's row order",
        MODEL,
        "        pooled = pooled.index_select(0, torch.argsort(order).to(pooled.device))",
        "        pooled = pooled",
        (T_MODEL,),
    ),
    Plant(
        "weight-drop-mask-per-segment",
        "weight drop: one DropConnect mask per forward pass, shared by its time segments",
        MODEL,
        "            return run_rnn(rnn, piece, self.cfg.rnn, state, weights=dropped)\n",
        "            return run_rnn(rnn, piece, self.cfg.rnn, state, weights=None)\n",
        (T_MODEL,),
    ),
    Plant(
        "gal-path-skips-weight-drop",
        "weight drop applies on the recurrent-dropout (step loop) path too",
        MODEL,
        '            w_hh = rnn.dropped_weights()["weight_hh_l0"]',
        '            w_hh = raw["weight_hh_l0"]',
        (T_MODEL,),
    ),
    Plant(
        "model-runs-the-padded-width",
        "padding invariance: the model reads lengths, never the padded width T",
        MODEL,
        "        T = int(lengths[0])  # time actually run\n",
        "        T = tokens.shape[1]  # time actually run\n",
        (T_MODEL,),
    ),
    # ---- issue 3: the training step
    Plant(
        "clip-before-unscale",
        "under a GradScaler, clipping acts on unscaled gradients",
        STEP,
        "    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones\n"
        '    params = [p for group in optimizer.param_groups for p in group["params"]]\n'
        "    norm = _clip(params, cfg)\n",
        '    params = [p for group in optimizer.param_groups for p in group["params"]]\n'
        "    norm = _clip(params, cfg)\n"
        "    scaler.unscale_(optimizer)\n",
        (T_STEP,),
    ),
    Plant(
        "smoothing-eps-over-k-minus-1",
        "label smoothing puts eps/K on every class (PyTorch's convention), not eps/(K-1)",
        STEP,
        "    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)\n",
        "    K = logits.shape[1]\n"
        "    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing * K / max(K - 1, 1))\n",
        (T_STEP,),
    ),
    Plant(
        "no-skip-on-non-finite-gradients",
        "non-finite gradients skip the step and leave the parameters untouched",
        STEP,
        "    if not skipped:\n        scaler.step(optimizer)",
        "    if True:\n        scaler.step(optimizer)",
        (T_STEP,),
    ),
    Plant(
        "returns-post-clip-norm",
        "train_step returns the pre-clip gradient norm",
        STEP,
        "        nn.utils.clip_grad_value_(params, cfg.max_value)\n    return norm\n",
        "        nn.utils.clip_grad_value_(params, cfg.max_value)\n"
        "    return nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])\n",
        (T_STEP,),
    ),
    Plant(
        "clip-per-tensor",
        "clipping is global across parameters, not per tensor",
        STEP,
        "        nn.utils.clip_grads_with_norm_(params, cfg.max_norm, norm)\n",
        "        for p in params:\n            nn.utils.clip_grad_norm_([p], cfg.max_norm)\n",
        (T_STEP,),
    ),
    Plant(
        "biases-decay",
        "no-decay group: 1-D parameters do not decay unless configured",
        STEP,
        "decays = (p.dim() >= 2 or cfg.decay_bias_and_norm)",
        "decays = (p.dim() >= 1 or cfg.decay_bias_and_norm)",
        (T_STEP,),
    ),
    Plant(
        "adamw-as-adam",
        "adamw decays decoupled: one step with zero gradient gives p*(1-lr*wd)",
        STEP,
        "        return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)\n",
        "        return torch.optim.Adam(groups, lr=cfg.lr, fused=True)\n",
        (T_STEP,),
    ),
    Plant(
        "scaler-on-for-bf16",
        "the GradScaler is enabled for fp16 only",
        STEP,
        'enabled=amp == "fp16")',
        'enabled=amp != "off")',
        (T_STEP,),
    ),
    Plant(
        "gradients-never-cleared",
        "train_step leaves gradients cleared (set to None)",
        STEP,
        "    optimizer.zero_grad(set_to_none=True)\n",
        "",
        (T_STEP,),
    ),
    Plant(
        "amp-off-keeps-enclosing-autocast",
        "amp='off' runs fp32 even inside a caller's autocast region",
        STEP,
        "enabled=dtype is not None)",
        "enabled=dtype is not None or torch.is_autocast_enabled(device_type))",
        (T_STEP,),
    ),
    # ---- issue 20: the harness that turns runs into conclusions (stats, ablation, sweep, report, fsio)
    Plant(
        "linear-c-chosen-on-test",
        "the linear reference's C is chosen on the validation split; the test split is never used for selection",
        ABLATION,
        '        f1 = _scores(y_val, clf.predict(x_val), k, "val")["val_f1"]\n',
        "        x_eval = vectorizer.transform([t for t, _ in corpus.test or corpus.val])\n"
        "        y_eval = np.array([y for _, y in corpus.test or corpus.val])\n"
        '        f1 = _scores(y_eval, clf.predict(x_eval), k, "val")["val_f1"]\n',
        (T_LEAKAGE,),
    ),
    Plant(
        "linear-tfidf-fit-on-all-splits",
        "the linear reference's TF-IDF vocabulary comes from the training split only",
        ABLATION,
        "    x_train = vectorizer.fit_transform([t for t, _ in corpus.train])"
        "  # vocabulary from the training split only\n",
        "    vectorizer.fit([t for split in (corpus.train, corpus.val, corpus.test) for t, _ in split])\n"
        "    x_train = vectorizer.transform([t for t, _ in corpus.train])\n",
        (T_LEAKAGE,),
    ),
    Plant(
        "linear-redraws-split-under-fixed-split",
        "the linear reference and the RNN variants see the same split of each seed, --fixed-split included",
        ABLATION,
        '            tasks.append(RunTask(LINEAR, "linear", base, seed, plan.fixed_split, fingerprint))\n',
        '            tasks.append(RunTask(LINEAR, "linear", base, seed, False, fingerprint))\n',
        (T_LEAKAGE,),
    ),
    Plant(
        "split-ignores-split-seed",
        "the per-seed train/validation split depends on data.split_seed and the seed",
        ABLATION,
        "    stream = int(np.random.SeedSequence([split_seed, seed]).generate_state(1)[0])\n",
        "    stream = int(np.random.SeedSequence([seed]).generate_state(1)[0])\n",
        (T_LEAKAGE,),
    ),
    Plant(
        "split-seeds-added",
        "each (data.split_seed, seed) pair draws its own split: (1, 0) is not (0, 1)",
        ABLATION,
        "    stream = int(np.random.SeedSequence([split_seed, seed]).generate_state(1)[0])\n",
        "    stream = split_seed + seed\n",
        (T_LEAKAGE,),
    ),
    Plant(
        "run-key-ignores-data-settings",
        "a run's key changes with every setting that changes its result, data.* included",
        ABLATION,
        '        config["data"].pop("source")  # the data are identified by their content, not their path\n'
        '        if self.kind == "linear":  # the reference does not depend on the RNN\'s settings\n'
        '            config = {"data": config["data"]}\n',
        '        if self.kind == "linear":  # the reference does not depend on the RNN\'s settings\n'
        "            config = {}\n"
        '        config.pop("data", None)  # the data are identified by their content (the fingerprint)\n',
        (T_IDENTITY,),
    ),
    Plant(
        "fingerprint-ignores-labels",
        "relabelled data get a new fingerprint, so old runs are not reused",
        ABLATION,
        "        h.update(json.dumps(split, ensure_ascii=False).encode())\n",
        "        h.update(json.dumps([text for text, _ in split], ensure_ascii=False).encode())\n",
        (T_IDENTITY,),
    ),
    Plant(
        "combined-bootstrap-unpaired-seeds",
        "the seeds + test-set interval resamples A's and B's seeds together (the shared seed effect cancels)",
        STATS,
        "        replicates[start : start + B] = (row_w * diff).sum(axis=1) / S\n",
        "        row_w_b = _draw_counts(rng, B, S)  # [B, S]\n"
        "        m_a, m_b = _per_seed_metric(a, y, col_w, metric, k), _per_seed_metric(b, y, col_w, metric, k)\n"
        "        replicates[start : start + B] = ((row_w * m_a).sum(axis=1) - (row_w_b * m_b).sum(axis=1)) / S\n",
        (T_ORACLE,),
    ),
    Plant(
        "min-effect-rule-on-observed-difference",
        "'no detectable difference' only when these seeds would detect min_effect (MDE <= min_effect)",
        STATS,
        "    if mde <= min_effect:\n",
        "    if abs(cmp.mean_diff) <= min_effect:\n",
        (T_ORACLE,),
    ),
    Plant(
        "constant-effect-gets-p-one",
        "a difference equal on every seed is exact: p = 0 when it is nonzero",
        STATS,
        "        p_value = 1.0 if abs(mean_diff) <= rounding else 0.0\n",
        "        p_value = 1.0\n",
        (T_ORACLE,),
    ),
    Plant(
        "verdict-needs-one-seed-more",
        "a verdict from min_seeds seeds on (no verdict below 3, one at 3)",
        STATS,
        "    if n < min_seeds:\n",
        "    if n <= min_seeds:\n",
        (T_ORACLE,),
    ),
    Plant(
        "ties-count-as-losses",
        "P(A>B) counts a tie as one half",
        STATS,
        "    wins = (xa > xb) + 0.5 * (xa == xb)  # [n] 1, 1/2 or 0 per seed\n",
        "    wins = (xa > xb) * 1.0  # [n] 1 or 0 per seed\n",
        (T_ORACLE,),
    ),
    Plant(
        "bouthillier-better-at-one-half",
        "A is better only when P(A>B)'s interval lies strictly above 0.5",
        STATS,
        "    if p_low > 0.5 and p_high >= gamma:\n",
        "    if p_low >= 0.5 and p_high >= gamma:\n",
        (T_ORACLE,),
    ),
    Plant(
        "holm-uncapped",
        "Holm-adjusted p-values are probabilities (capped at 1)",
        STATS,
        "    adjusted_sorted = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)\n",
        "    adjusted_sorted = np.maximum.accumulate(p[order] * (m - np.arange(m)))\n",
        (T_ORACLE,),
    ),
    Plant(
        "verdict-from-raw-p",
        "'helps' and 'hurts' come from the Holm-adjusted p, never the raw one",
        REPORT,
        "                cmp, p_adj, combined_ci=ci, min_effect=min_effect,",
        "                cmp, cmp.p_value, combined_ci=ci, min_effect=min_effect,",
        (T_ORACLE,),
    ),
    Plant(
        "verdict-ignores-test-set-interval",
        "a verdict needs the seeds + test-set interval to confirm its direction",
        REPORT,
        "            ci = (combined[1], combined[2]) if combined is not None else None\n",
        "            ci = None\n",
        (T_ORACLE,),
    ),
    Plant(
        "report-ignores-min-effect",
        "the verdict uses the min_effect the user asked for",
        REPORT,
        "combined_ci=ci, min_effect=min_effect, min_seeds=MIN_SEEDS, plan_alpha",
        "combined_ci=ci, min_effect=0.01, min_seeds=MIN_SEEDS, plan_alpha",
        (T_ORACLE,),
    ),
    Plant(
        "seeds-planned-at-raw-alpha",
        "seeds needed and the detectable effect are planned at Holm's level, alpha / m, not at alpha",
        REPORT,
        "    plan_alpha = ALPHA / max(len(tested), 1)\n",
        "    plan_alpha = ALPHA\n",
        (T_ORACLE,),
    ),
    Plant(
        "answer-above-below-inverted",
        "the answer says whether the linear reference scores above or below the regularized model",
        REPORT,
        '        relation = "above" if lin.mean > a.mean else "below"\n',
        '        relation = "above" if lin.mean < a.mean else "below"\n',
        (T_ORACLE,),
    ),
    Plant(
        "combined-interval-on-accuracy-for-f1",
        "the seeds + test-set interval is computed on the metric the comparison uses",
        REPORT,
        '                    metric="accuracy" if metric == "test_acc" else "macro_f1",\n',
        '                    metric="accuracy",\n',
        (T_ORACLE,),
    ),
    Plant(
        "csv-p-columns-swapped",
        "summary.csv's columns hold what their headers say",
        REPORT,
        '            "p_value",\n            "p_holm",\n',
        '            "p_holm",\n            "p_value",\n',
        (T_ORACLE,),
    ),
    Plant(
        "failed-run-never-retried",
        "a failed run is retried by the next sweep",
        SWEEP,
        '    todo = [t for t in tasks if state.records.get(t.key, {}).get("status") not in ("ok", "diverged")]\n',
        "    todo = [t for t in tasks if t.key not in state.records]\n",
        (T_SCHEDULER,),
    ),
    Plant(
        "duplicate-variants-trained-twice",
        "identical variants share one run",
        SWEEP,
        "    todo = list({t.key: t for t in todo}.values())  # a variant identical to another runs once\n",
        "",
        (T_SCHEDULER,),
    ),
    Plant(
        "worker-threads-not-set",
        "each worker runs with the torch threads the sweep gave it",
        SWEEP,
        "    torch.set_num_threads(threads)\n    _WORKER_CORPUS = corpus\n",
        "    _WORKER_CORPUS = corpus\n",
        (T_SCHEDULER,),
    ),
    Plant(
        "manifest-compares-description",
        "an --out holding runs of other data is refused, told apart by the data's fingerprint",
        SWEEP,
        '        if isinstance(old, dict) and old.get("fingerprint") != manifest["fingerprint"]:\n',
        '        if isinstance(old, dict) and old.get("data") != manifest["data"]:\n',
        (T_SCHEDULER,),
    ),
    Plant(
        "lock-released-before-the-sweep",
        "the --out lock is held from before the first run to after the last write",
        "rnnreg/study.py",
        "        with OutputLock(self.out):\n            check_manifest(",
        "        with OutputLock(self.out):\n            pass\n        if True:\n            check_manifest(",
        (T_SCHEDULER,),
    ),
    Plant(
        "atomic-write-folder-fsync-dropped",
        "an atomic write fsyncs the folder after the rename",
        FSIO,
        "        Path(tmp).unlink(missing_ok=True)\n        raise\n    _fsync_dir(path.parent)\n",
        "        Path(tmp).unlink(missing_ok=True)\n        raise\n",
        (T_DURABILITY,),
    ),
    Plant(
        "atomic-write-folder-fsync-before-rename",
        "an atomic write fsyncs the folder after the rename, not before",
        FSIO,
        "        os.replace(tmp, path)\n    except BaseException:\n        Path(tmp).unlink(missing_ok=True)\n"
        "        raise\n    _fsync_dir(path.parent)\n",
        "        _fsync_dir(path.parent)\n        os.replace(tmp, path)\n    except BaseException:\n"
        "        Path(tmp).unlink(missing_ok=True)\n        raise\n",
        (T_DURABILITY,),
    ),
    Plant(
        "append-new-file-folder-fsync-dropped",
        "an append that creates its file fsyncs the folder",
        FSIO,
        "    if created:  # a new file's name lives in its folder",
        "    if False:  # a new file's name lives in its folder",
        (T_DURABILITY,),
    ),
    # ---- data
    Plant(
        "collate-pads-with-unk",
        "collate pads with PAD",
        "rnnreg/batch.py",
        "    tokens = torch.full((len(examples), max(lengths)), pad_id, dtype=torch.int64)\n",
        "    tokens = torch.full((len(examples), max(lengths)), 1, dtype=torch.int64)\n",
        ("tests/test_batch.py",),
    ),
)


# Appended to the copy's conftest.py: the ci profile (derandomized) without shrinking. One failing example is the
# verdict; shrinking it to a minimal one can take minutes per plant and changes nothing here.
NO_SHRINK = """

from hypothesis import Phase as _Phase

settings.register_profile(
    "plant", parent=settings.get_profile("ci"), phases=[_Phase.explicit, _Phase.reuse, _Phase.generate]
)
settings.load_profile("plant")
"""


def copy_project(dest: Path) -> None:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        else:
            shutil.copy2(src, dest / name)
    with (dest / "conftest.py").open("a") as f:
        f.write(NO_SHRINK)


def pytest_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        CI="true",
        HYPOTHESIS_PROFILE="ci",
        PYTHONPATH=str(workdir),  # the copy's rnnreg, before any installed one
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def run_tests(workdir: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-rf", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(
            cmd, cwd=workdir, env=pytest_env(workdir), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


def failed_tests(output: str) -> list[str]:
    return re.findall(r"^FAILED (\S+)", output, flags=re.MULTILINE)


def imports_the_copy(workdir: Path) -> bool:
    probe = [sys.executable, "-c", "import rnnreg, pathlib; print(pathlib.Path(rnnreg.__file__).resolve())"]
    out = subprocess.run(probe, cwd=workdir, env=pytest_env(workdir), capture_output=True, text=True, check=False)
    return out.returncode == 0 and Path(out.stdout.strip()).is_relative_to(workdir.resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="plants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the plants and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run (default: 900)")
    args = parser.parse_args(argv)

    if args.list:
        for plant in PLANTS:
            print(f"{plant.name:40s} {plant.path:18s} {plant.claim}")
        return 0
    known = {p.name for p in PLANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown plant(s) {unknown}; see --list")
    if len({p.name for p in PLANTS}) != len(PLANTS):
        parser.error("two plants share a name")
    plants = [p for p in PLANTS if not args.names or p.name in args.names]

    with tempfile.TemporaryDirectory(prefix="rnnreg-plant-") as tmp:
        work = Path(tmp)
        copy_project(work)
        if not imports_the_copy(work):
            print("plant: the copy's tests would not import the copied rnnreg; nothing was judged", file=sys.stderr)
            return 2
        files = tuple(sorted({t for p in plants for t in p.tests}))
        t0 = time.perf_counter()
        code, output = run_tests(work, files, args.timeout)
        if code != 0:
            print(output[-4000:], file=sys.stderr)
            print(f"plant: the unpatched suite fails ({' '.join(files)}); fix that first", file=sys.stderr)
            return 2
        print(f"baseline: {' '.join(files)} pass unpatched ({time.perf_counter() - t0:.0f} s)")

        verdicts: dict[str, int] = {"caught": 0, "missed": 0, "error": 0, "stale": 0}
        for plant in plants:
            target = work / plant.path
            original = target.read_text()
            count = original.count(plant.old)
            if count != 1:
                verdict, detail = "stale", f"old text found {count} times in {plant.path}; update the plant"
            else:
                target.write_text(original.replace(plant.old, plant.new))
                t0 = time.perf_counter()
                try:
                    code, output = run_tests(work, plant.tests, args.timeout)
                finally:
                    target.write_text(original)
                seconds = f"{time.perf_counter() - t0:.0f} s"
                if code == 1:
                    verdict, detail = "caught", f"{seconds}, by {', '.join(failed_tests(output)) or '?'}"
                elif code == 0:
                    verdict, detail = "missed", f"{seconds}, {' '.join(plant.tests)} all pass"
                else:
                    tail = output.strip().splitlines()[-1:] or ["no output"]
                    verdict, detail = "error", f"{seconds}, pytest exit {code}: {tail[0]}"
            verdicts[verdict] += 1
            print(f"{verdict.upper():7s} {plant.name}: {plant.claim} [{detail}]", flush=True)

    total = len(plants)
    print(
        f"caught {verdicts['caught']} of {total}"
        + "".join(f", {verdicts[k]} {k}" for k in ("missed", "error", "stale") if verdicts[k])
    )
    return 0 if verdicts["caught"] == total else 1


if __name__ == "__main__":
    sys.exit(main())
