"""Read back what a run logged to TensorBoard."""

from __future__ import annotations

from pathlib import Path


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar tag of the run's TensorBoard events, as its list of values in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((Path(run_dir) / "tensorboard").glob("events.out.tfevents*"))
    assert events, f"no TensorBoard events in {run_dir}"
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
