"""Read back what a run logged to TensorBoard."""

from __future__ import annotations

from pathlib import Path


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((Path(run_dir) / "tensorboard").glob("events.out.tfevents*"))
    assert events, f"no TensorBoard events in {run_dir}"
    acc = EventAccumulator(str(events[0].parent))  # every events file of the run (the end-of-run validation adds one)
    acc.Reload()
    return acc


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar tag of the run's TensorBoard events, as its list of values in step order."""
    acc = _events(run_dir)
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def image_sizes(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Every image tag of the run, with the (height, width) of its first image."""
    acc = _events(run_dir)
    return {tag: (acc.Images(tag)[0].height, acc.Images(tag)[0].width) for tag in acc.Tags()["images"]}
