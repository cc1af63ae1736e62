"""Derive the embedded default dataset ``data/eurosat_mini`` from the EuroSAT RGB zip.

A stratified random subset: ``--per-class`` images from each of the 10 classes, chosen with
``core.seeding.rng(seed, "eurosat-mini")``; the original JPEG bytes are copied (no re-encode), so
the subset decodes to exactly the pixels of the full dataset. Writes the MIT notice (LICENSE) and a
README with the citation and the command. The source zip's sha256 is verified first.

    uv run python scripts/make_eurosat_mini.py --zip ../shared/datasets/EuroSAT_RGB.zip
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import uuid
import zipfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable without installing the project

from core.seeding import rng  # noqa: E402

EUROSAT_SHA256 = "7727a6e3fb76cbfc6e4e6e434d8930a9cf9f751eb62387209c7cfd5add973cfe"
EUROSAT_COUNTS = {
    "AnnualCrop": 3000, "Forest": 3000, "HerbaceousVegetation": 3000, "Highway": 2500, "Industrial": 2500,
    "Pasture": 2000, "PermanentCrop": 2500, "Residential": 3000, "River": 2500, "SeaLake": 3000,
}
ROOT = "EuroSAT_RGB"

LICENSE_TEXT = """\
MIT License

Copyright (c) 2023 Patrick Helber

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

README_TEMPLATE = """\
# eurosat_mini — the embedded default dataset

A stratified random subset of **EuroSAT RGB**: {per_class} images from each of the 10 land-use /
land-cover classes ({total:,} images, 64×64 px Sentinel-2 RGB JPEGs), one folder per class. It lets
`uv run python -m runner` and the tests run with no network and no `../shared`. Select the full
27,000-image dataset with `data=eurosat data.path=<EuroSAT_RGB.zip or extracted folder>`.

## How it was made

```
uv run python scripts/make_eurosat_mini.py --zip ../shared/datasets/EuroSAT_RGB.zip \\
    --per-class {per_class} --out data/eurosat_mini --seed {seed}
```

- Source: `EuroSAT_RGB.zip`, {zip_size:,} bytes, sha256 `{sha256}` (verified by the script).
- Per class, {per_class} file names drawn without replacement by `core.seeding.rng({seed}, "eurosat-mini")`
  from the sorted member list; the original JPEG bytes are copied unchanged (no re-encoding).
- Counts: {counts}.

## Licence and citation

EuroSAT is published under the MIT licence, Copyright (c) 2023 Patrick Helber; the notice is in
[LICENSE](LICENSE) beside this file and applies to these images.

> Patrick Helber, Benjamin Bischke, Andreas Dengel, Damian Borth. "EuroSAT: A Novel Dataset and Deep
> Learning Benchmark for Land Use and Land Cover Classification". IEEE Journal of Selected Topics in
> Applied Earth Observations and Remote Sensing, 12(7), 2019.
"""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, default=Path("../shared/datasets/EuroSAT_RGB.zip"))
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("data/eurosat_mini"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if not args.zip.is_file():
        parser.exit(2, f"error: zip not found: {args.zip}\n")
    smallest = min(EUROSAT_COUNTS.values())
    if not 1 <= args.per_class <= smallest:
        parser.exit(2, f"error: --per-class must be in [1, {smallest}] (the smallest class), got {args.per_class}\n")
    sha = sha256_of(args.zip)
    if sha != EUROSAT_SHA256:
        parser.exit(2, f"error: {args.zip} has sha256 {sha}, expected {EUROSAT_SHA256} (not the published EuroSAT RGB zip)\n")

    with zipfile.ZipFile(args.zip) as archive:
        by_class: dict[str, list[str]] = defaultdict(list)
        for info in archive.infolist():
            parts = info.filename.split("/")
            if not info.is_dir() and len(parts) == 3 and parts[0] == ROOT and parts[2].endswith(".jpg"):
                by_class[parts[1]].append(info.filename)
        found = {c: len(m) for c, m in by_class.items()}
        if found != EUROSAT_COUNTS:
            parser.exit(2, f"error: unexpected class counts in {args.zip}: {found}\n")

        generator = rng(args.seed, "eurosat-mini")
        out = args.out.resolve()
        tmp = out.with_name(f".tmp-{out.name}-{uuid.uuid4().hex[:8]}")
        try:
            for cls in sorted(by_class):
                members = sorted(by_class[cls])
                chosen = sorted(members[i] for i in generator.choice(len(members), args.per_class, replace=False))
                (tmp / cls).mkdir(parents=True)
                for member in chosen:
                    (tmp / cls / member.rsplit("/", 1)[1]).write_bytes(archive.read(member))
            (tmp / "LICENSE").write_text(LICENSE_TEXT)
            counts = ", ".join(f"{c} {args.per_class}" for c in sorted(by_class))
            (tmp / "README.md").write_text(README_TEMPLATE.format(
                per_class=args.per_class, total=args.per_class * len(by_class), seed=args.seed,
                zip_size=args.zip.stat().st_size, sha256=sha, counts=counts))
            # Swap in the new tree only once it is complete.
            old = out.with_name(f".old-{out.name}-{uuid.uuid4().hex[:8]}")
            if out.exists():
                os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {args.per_class * len(by_class):,} images ({size / 1e6:.1f} MB) in {len(by_class)} classes to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
