"""``python -m runner.data [hydra overrides…]``: prepare the selected dataset and print its card.

Examples::

    python -m runner.data                                   # the embedded EuroSAT subset
    python -m runner.data data=eurosat data.path=<EuroSAT_RGB.zip or folder> seed=1
    python -m runner.data data=folder data.path=/data/my_classes data.image_size=32

Composes ``conf/`` with Hydra's compose API (no output directory is created). Bad input or a bad
override prints one ``error: …`` line on stderr and exits with status 2.
"""
from __future__ import annotations

import sys

USAGE = __doc__


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(USAGE.strip())
        return 0
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import runner
    from runner.data import DataError, dataset_card, prepare

    try:
        with initialize_config_dir(config_dir=str(runner.CONF_DIR), version_base="1.3", job_name="runner.data"):
            cfg = compose(config_name="config", overrides=argv)
        ds = prepare(cfg.data, int(cfg.seed))
    except (DataError, HydraException, OmegaConfBaseException) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(dataset_card(ds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
