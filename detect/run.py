"""``python -m detect.run``: the whole pipeline, from the data to a scored set of detections.

    python -m detect.run                                  # embedded data, demo profile
    python -m detect.run proposals=ss                     # R-CNN-like baseline proposals
    python -m detect.run -m proposals.ss.scale=1,2 proposals.multibox.top_k=0,200   # a sweep

Returns the mAP, so Hydra sweepers (e.g. Optuna) can optimise it.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from detect.cli import run_cli, run_user_errors
from detect.pipeline import run_pipeline


@run_user_errors
def _main(cfg: DictConfig) -> float:
    metrics = run_pipeline(cfg, Path(HydraConfig.get().runtime.output_dir))
    return float("nan") if metrics["mAP"] is None else float(metrics["mAP"])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return _main(cfg)


if __name__ == "__main__":
    run_cli(main)
