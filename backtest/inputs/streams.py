"""The seeded random streams of a path, in one place so that no two uses share one.

Each draw that is not the synthetic generator's own comes from SeedSequence([seed, path_id])
with a spawn key of its own: the draws of a path then depend on neither the batch nor the
window, and adding a use never moves another's draws. (Two uses once shared key 2: the lending
market's utilisation and the stale-quote traders drew the same bits.)
"""

import numpy as np

ACCEPTANCE = 1  # price-elastic traders: each row's uniform against its acceptance probability
UTILISATION = 2  # the lending market's utilisation process
HEDGE_DELAY = 3  # [mev] random_delay: each tick's extra ticks before a hedge fills
STALE_TRADERS = 4  # which rows are stale-quote traders


def path_rng(seed: int, path_id: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, path_id], spawn_key=(stream,)))
