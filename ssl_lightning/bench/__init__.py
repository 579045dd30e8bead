"""Benchmarks: what a step of ours costs against the plain-PyTorch way of doing the same thing, in one run.

One entry point, ``python -m ssl_lightning.bench [MODE] [overrides...]``:

- ``steps`` (the default, :mod:`.steps`): every method's training-step throughput, our Lightning loop against a
  plain loop (:mod:`.plain`) on the same batches, with peak memory; then the MAE check;
- ``data`` (:mod:`.data`): the input pipeline alone, augmented views/s against per-sample PIL;
- ``mae`` (:mod:`.mae`): MAE's step time at several mask ratios against encoding every patch;
- ``text`` (:mod:`.text`): nanoGPT's CPU Shakespeare run, our CLM loop against a plain loop;
- ``syncbn`` (:mod:`.syncbn`): one ResNet-18 step with our SyncBatchNorm on 2 gloo ranks against BatchNorm2d;
- ``knn`` (:mod:`.knn`): the kNN bank's bytes per rank on 2 gloo ranks against one process;
- ``moco`` (:mod:`.moco`): MoCo's one-device Shuffle-BN step, one backbone call per view against one per group;
- ``logging`` (:mod:`.logcost`): what ``self.log`` costs a step, every step against only on the steps written.

Shared helpers (device sync, peak memory) are in :mod:`.common`.
"""
