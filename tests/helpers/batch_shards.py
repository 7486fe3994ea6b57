"""What each process of a data-parallel run draws from a batch source with a settable `shard`."""


def shards_of(batches, step: int, world: int) -> list[dict]:
    """The batch of `step` as each of `world` processes draws it; the batches' shard is restored."""
    parts = []
    for rank in range(world):
        batches.shard = (rank, world)
        parts.append(batches(step))
    batches.shard = (0, 1)
    return parts
