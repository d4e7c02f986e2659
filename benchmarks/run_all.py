"""Run every benchmark in this process, write ``benchmarks/results/`` and print the tables.

Run with ``python -m benchmarks`` or ``python -m benchmarks.run_all``; pass benchmark names
(``logreg``, ``iwae``, ``discrete_latent``, ``scaling``, ``vae``, ``gp``, ``diffusion``,
``flows``) to run only those.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmarks import diffusion, discrete_latent, harness, iwae, logreg, scaling, vae
from benchmarks import flows as normalizing_flows
from benchmarks import gp as gaussian_process

BENCHMARKS: dict[str, Callable[[], list[harness.Row]]] = {
    logreg.NAME: logreg.run,
    iwae.NAME: iwae.run,
    discrete_latent.NAME: discrete_latent.run,
    scaling.NAME: scaling.run,
    vae.NAME: vae.run,
    gaussian_process.NAME: gaussian_process.run,
    diffusion.NAME: diffusion.run,
    normalizing_flows.NAME: normalizing_flows.run,
}


def main(names: list[str] | None = None) -> None:
    """Run the named benchmarks (all by default) and print each one's markdown table."""
    names = names or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmarks {unknown}; choose from {sorted(BENCHMARKS)}")
    for name in names:
        print(harness.write_results(name, BENCHMARKS[name]()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
