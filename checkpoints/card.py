"""The one model-card writer: a README.md with Hugging Face front matter, for exports and trainer outputs alike."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def model_card(*, title: str, summary: list[str], tags: list[str], library: str = "transformers",
               base_model: str | None = None, pipeline_tag: str | None = None, datasets: list[str] | None = None,
               metrics: dict[str, float] | None = None, settings: dict[str, Any] | None = None) -> str:
    """README.md text: front matter (library, pipeline tag, tags, base model, datasets, metric names), a title,
    the summary lines, then the settings as JSON and the metrics as a table when given."""
    import yaml

    meta: dict[str, Any] = {"library_name": library}
    if pipeline_tag:
        meta["pipeline_tag"] = pipeline_tag
    meta["tags"] = list(dict.fromkeys(tags))
    if base_model:
        meta["base_model"] = base_model
    if datasets:
        meta["datasets"] = list(datasets)
    if metrics:
        meta["metrics"] = sorted(metrics)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {title}", "", *summary, ""]
    if settings:
        lines += ["## Settings", "", "```json", json.dumps(settings, indent=1, sort_keys=True, default=str), "```", ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(metrics.items())] + [""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, text: str) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(text)
    return path
