"""``llmrec baseline train``: fit a model on a split's training data, select on validation, report test.

Every baseline is a function ``fit(split, config: dict, out: Path, seed: int) -> scorer`` returning a
full-ranking score function (see :func:`llmrec.eval.evaluate_scores`), or a dict with ``"valid"`` and
``"test"`` :class:`~llmrec.eval.EvalResult` for models that rank by generation (TIGER). The registry maps
names to ``module:function`` so heavy models import only when asked for.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

import yaml

from llmrec.artifacts import atomic_dir, make_manifest, sha256_file, write_json
from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)

REGISTRY: dict[str, str] = {
    "pop": "llmrec.models.floors:fit_pop",
    "itemknn": "llmrec.models.floors:fit_itemknn",
}


def load_config(path: str | Path | None) -> dict:
    if not path:
        return {}
    path = Path(path)
    if not path.is_file():
        raise LlmrecError(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise LlmrecError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise LlmrecError(f"{path}: expected a mapping of options at the top level")
    return cfg


def train_baseline(model: str, data: str | Path, split: str = "loo", config: dict | None = None,
                   out: str | Path | None = None, seed: int = 0, ks=None, exclude_history: bool = False,
                   overwrite: bool = False) -> dict:
    """Fit ``model``, evaluate on validation and test, write ``out`` (metrics.json = test metrics)."""
    from llmrec.data_builders.splits import load_split
    from llmrec.eval import evaluate_scores, parse_ks

    if model not in REGISTRY:
        raise LlmrecError(f"unknown model {model!r}; expected one of {', '.join(REGISTRY)}")
    ks = parse_ks(ks)
    config = dict(config or {})
    sp = load_split(data, split)
    mod, fn = REGISTRY[model].split(":")
    fit = getattr(importlib.import_module(mod), fn)
    out = Path(out) if out else None
    if out is not None and out.exists() and not overwrite and not config.get("resume"):
        raise LlmrecError(f"{out}: output folder already exists (pass --overwrite to replace it)")
    t0 = time.perf_counter()
    work = out.with_name(f".{out.name}.work") if out is not None else None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    fitted = fit(sp, config, work, seed)
    t_fit = time.perf_counter() - t0
    if isinstance(fitted, dict):
        res = fitted
    else:
        res = {part: evaluate_scores(fitted, sp.examples(part), sp.n_items, ks=ks, exclude_history=exclude_history,
                                     desc=f"{model} {part}") for part in ("valid", "test")}
    t_total = time.perf_counter() - t0
    summary = {"model": model, "split": split, "test": res["test"].metrics, "valid": res["valid"].metrics,
               "fit_seconds": round(t_fit, 2), "total_seconds": round(t_total, 2)}
    if out is not None:
        with atomic_dir(out, overwrite=True) as tmp:
            write_json(tmp / "metrics.json", res["test"].metrics)
            write_json(tmp / "valid_metrics.json", res["valid"].metrics)
            res["test"].per_user.to_parquet(tmp / "per_user_test.parquet", index=False)
            for f in work.iterdir():
                f.rename(tmp / f.name)
            write_json(tmp / "run.json", make_manifest(
                "baseline", config={"model": model, "split": split, **config, "ks": list(ks),
                                    "exclude_history": exclude_history},
                seed=seed, inputs={str(sp.path / "train.parquet"): sha256_file(sp.path / "train.parquet")},
                dataset=str(data), timings={"fit_s": round(t_fit, 2), "total_s": round(t_total, 2)},
                **({"extra": fitted_info} if (fitted_info := res.get("info")) else {})))
        work.rmdir()
    return summary
