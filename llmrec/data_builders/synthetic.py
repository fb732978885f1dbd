"""The embedded default: a deterministic synthetic shop that needs no download.

Items belong to categories (shampoo, conditioner, ...) and brands, with a price tier and generated titles and
descriptions. Users have latent tastes (favourite brands, a price tier, a home department) and shop along
category transitions (shampoo -> conditioner -> hair mask ...); within a brand's product line, each item has a
"companion" in the next category that tasteful users often buy next. So the next item depends on the last
ones (a correct sequential model clearly beats popularity), and titles carry the signal that text embeddings
and Semantic IDs can use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.data_builders.raw import RawData

# department -> categories in their usual buying order
_DEPARTMENTS = {
    "hair care": ["shampoo", "conditioner", "hair mask", "hair oil", "styling gel"],
    "skin care": ["cleanser", "toner", "serum", "moisturizer", "sunscreen"],
    "makeup": ["primer", "foundation", "concealer", "mascara", "lipstick"],
    "nails": ["nail polish", "top coat", "cuticle oil", "nail file", "polish remover"],
    "fragrance": ["eau de parfum", "body mist", "scented lotion", "deodorant", "shower gel"],
}
_BRANDS = ["Aurelia", "Botanix", "Celeste", "Dermavita", "Everbloom", "Fleur", "Glowline", "Hydra", "Ivory & Co",
           "Jadeleaf", "Kalea", "Lumen", "Maison Rose", "Nordic Pure", "Oasis", "Petalia", "Quartz", "Radiance",
           "Solstice", "Terra"]
_ADJ = ["Gentle", "Hydrating", "Volumizing", "Repairing", "Brightening", "Soothing", "Matte", "Radiant", "Nourishing",
        "Clarifying", "Silky", "Fresh", "Intense", "Lightweight", "Rich", "Daily", "Overnight", "Botanical"]
_FEATURES = ["argan oil", "vitamin C", "hyaluronic acid", "shea butter", "green tea", "rose water", "aloe vera",
             "jojoba", "niacinamide", "coconut", "charcoal", "keratin", "ceramides", "lavender", "citrus"]
_SIZES = ["1 oz", "1.7 oz", "3.4 oz", "6.8 oz", "8 oz", "12 oz", "16 oz"]
_TIERS = ["budget", "everyday", "premium", "luxury"]


@dataclass
class SyntheticConfig:
    n_users: int = 1500
    n_items: int = 400
    seed: int = 0
    min_len: int = 5
    max_len: int = 30
    mean_len: float = 11.0
    p_companion: float = 0.45   # next item = companion of the last item
    p_transition: float = 0.35  # next category follows the department's order
    start: str = "2023-01-01"


def generate(cfg: SyntheticConfig) -> RawData:
    rng = np.random.default_rng(cfg.seed)
    cats = [(d, c) for d, cs in _DEPARTMENTS.items() for c in cs]
    n_cat = len(cats)
    # items: round-robin over categories so every category is populated
    item_cat = np.arange(cfg.n_items) % n_cat
    rng.shuffle(item_cat)
    brand_focus = {b: rng.choice(len(_DEPARTMENTS), size=2, replace=False) for b in range(len(_BRANDS))}
    dept_of_cat = np.array([list(_DEPARTMENTS).index(d) for d, _ in cats])
    item_brand = np.empty(cfg.n_items, int)
    for i, c in enumerate(item_cat):
        fits = [b for b, ds in brand_focus.items() if dept_of_cat[c] in ds]
        item_brand[i] = rng.choice(fits) if fits and rng.random() < 0.85 else rng.integers(len(_BRANDS))
    item_tier = rng.integers(len(_TIERS), size=cfg.n_items)
    popularity = rng.pareto(1.2, size=cfg.n_items) + 1.0

    titles, descs = [], []
    for i in range(cfg.n_items):
        dept, cat = cats[item_cat[i]]
        adj = _ADJ[rng.integers(len(_ADJ))]
        feat = _FEATURES[rng.integers(len(_FEATURES))]
        size = _SIZES[rng.integers(len(_SIZES))]
        titles.append(f"{_BRANDS[item_brand[i]]} {adj} {cat.title()} with {feat.title()}, {size}")
        descs.append(f"A {_TIERS[item_tier[i]]} {cat} from {_BRANDS[item_brand[i]]}'s {dept} line, made with {feat}. "
                     f"{adj} formula for everyday use.")

    # companion: same brand (else same tier), next category of the department
    next_cat = np.array([i + 1 if (i + 1) % 5 else i - 4 for i in range(n_cat)])
    by_cat = [np.flatnonzero(item_cat == c) for c in range(n_cat)]
    companion = np.empty(cfg.n_items, int)
    for i in range(cfg.n_items):
        cand = by_cat[next_cat[item_cat[i]]]
        same = cand[item_brand[cand] == item_brand[i]]
        pool = same if len(same) else cand[item_tier[cand] == item_tier[i]]
        pool = pool if len(pool) else cand
        companion[i] = pool[rng.integers(len(pool))]

    users, items, times = [], [], []
    t0 = int(pd.Timestamp(cfg.start, tz="UTC").timestamp())
    for u in range(cfg.n_users):
        home = rng.integers(len(_DEPARTMENTS))
        fav = rng.choice(len(_BRANDS), size=3, replace=False)
        tier = rng.integers(len(_TIERS))
        L = int(np.clip(rng.geometric(1.0 / (cfg.mean_len - cfg.min_len + 1)) + cfg.min_len - 1,
                        cfg.min_len, cfg.max_len))
        t = t0 + int(rng.integers(0, 300)) * 86400
        cat = rng.choice(np.flatnonzero(dept_of_cat == home))
        prev = -1
        seen: set[int] = set()
        for _ in range(L):
            r = rng.random()
            if prev >= 0 and r < cfg.p_companion and companion[prev] not in seen:
                item = companion[prev]
            else:
                if prev >= 0 and r < cfg.p_companion + cfg.p_transition:
                    cat = next_cat[item_cat[prev]]
                elif rng.random() < 0.3:
                    cat = rng.integers(n_cat)
                elif rng.random() < 0.7:
                    cat = rng.choice(np.flatnonzero(dept_of_cat == home))
                cand = by_cat[cat]
                cand = cand[[c not in seen for c in cand]] if len(seen) < cfg.n_items // 2 else cand
                if len(cand) == 0:
                    cand = by_cat[cat]
                w = popularity[cand] * np.where(np.isin(item_brand[cand], fav), 4.0, 1.0) \
                    * np.where(item_tier[cand] == tier, 2.0, 1.0)
                item = cand[rng.choice(len(cand), p=w / w.sum())]
            users.append(u + 1)
            items.append(int(item) + 1)
            times.append(t)
            seen.add(int(item))
            prev = int(item)
            t += int(rng.integers(1, 20)) * 86400 + int(rng.integers(0, 86400))

    inter = pd.DataFrame({"user": users, "item": items, "timestamp": np.asarray(times, np.int64)})
    meta = pd.DataFrame({
        "item": np.arange(1, cfg.n_items + 1).astype(str),
        "title": titles,
        "brand": [_BRANDS[b] for b in item_brand],
        "categories": [f"Beauty > {cats[c][0].title()} > {cats[c][1].title()}" for c in item_cat],
        "description": descs,
        "price_tier": [_TIERS[t] for t in item_tier],
    })
    return RawData(inter, meta, sources=[], has_timestamps=True, extra={"generator": "llmrec.synthetic"})


def build_synthetic(out: str | Path, cfg: SyntheticConfig | None = None, overwrite: bool = False) -> Path:
    """Generate the shop and write it as a normal dataset folder."""
    from llmrec.data_builders.build import write_raw_dataset
    from llmrec.data_builders.preprocess import PreprocessConfig

    cfg = cfg or SyntheticConfig()
    raw = generate(cfg)
    return write_raw_dataset(raw, out, PreprocessConfig(), {"format": "synthetic", "synthetic": asdict(cfg)},
                             overwrite=overwrite, seed=cfg.seed)
