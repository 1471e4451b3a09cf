"""TensorBoard's HParams tab for a sweep: one experiment summary that covers all its runs.

Each run logs its own hyperparameter values (`mlplab.train.log_hyperparameters`); the experiment,
which names the tab's columns, is written here once per sweep, into the sweep directory itself.
TensorBoard takes the experiment from whichever run holds one, the first it finds when several
do (`tensorboard/plugins/hparams/backend_context.py`), so it must be the only one: the union of
every run's hyperparameters, each with the values it took and whether they differ (TensorBoard
lists those first and shows the first five), and the final losses and scores as metrics.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

EVENTS_SUFFIX = ".hparams"  # ends the name of the sweep's own events file, replaced by each report


def session_hparams(root: Path) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Each run's hyperparameters, as its session start info says, and the runs' scalar tags."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # per-file "watcher" notes
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(root))
    multiplexer.Reload()
    runs = {}
    for run, tags in multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        if content := tags.get(metadata.SESSION_START_INFO_TAG):
            start = metadata.parse_session_start_info_plugin_data(content)
            runs[run] = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    scalars = multiplexer.PluginRunToTagToContent("scalars")
    return runs, {tag for run in runs for tag in scalars.get(run, {})}


def metric_tags(logged: set[str]) -> list[str]:
    """The final losses and task scores the runs logged: validation, test, then training."""
    from mlplab.tasks import SCORE_NAMES

    names = ["loss", *dict.fromkeys(SCORE_NAMES.values())]
    tags = [f"{split}/{name}" for split in ("val", "test") for name in names] + ["train/loss"]
    return [tag for tag in tags if tag in logged]


def hparam_info(name: str, values: list[Any]) -> Any:
    """One column (an `api_pb2.HParamInfo`): the values it took, as text if their types differ."""
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    distinct = list(dict.fromkeys(values))
    if len({type(value) for value in distinct}) > 1:
        distinct = list(dict.fromkeys(str(value) for value in distinct))
    info = api_pb2.HParamInfo(name=name, differs=len(distinct) > 1)
    hp.Discrete(distinct).update_hparam_info(info)  # its type and its values
    return info


def write_experiment(root: Path) -> None:
    """Write the experiment of the runs under `root` into `root` (none if no run logged values)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    from torch.utils.tensorboard import SummaryWriter

    runs, logged = session_hparams(root)
    if not runs:
        return
    names = dict.fromkeys(name for values in runs.values() for name in values)
    experiment = api_pb2.Experiment(
        hparam_infos=[
            hparam_info(name, [values[name] for values in runs.values() if name in values])
            for name in names
        ],
        metric_infos=[hp.Metric(tag).as_proto() for tag in metric_tags(logged)],
        time_created_secs=time.time(),
    )
    summary = Summary()
    summary.value.add(
        tag=metadata.EXPERIMENT_TAG,
        metadata=metadata.create_summary_metadata(
            plugin_data_pb2.HParamsPluginData(experiment=experiment)
        ),
        tensor=metadata.NULL_TENSOR,
    )
    for old in root.glob(f"events.out.tfevents.*{EVENTS_SUFFIX}"):
        old.unlink()  # TensorBoard keeps the first experiment it reads: never leave two
    with SummaryWriter(str(root), filename_suffix=EVENTS_SUFFIX) as writer:
        writer.file_writer.add_summary(summary)
