"""NIGHT plumbing shared by the certify, evaluate and attack commands."""

from __future__ import annotations


def read_triplets(root, *, splits, min_votes: int):
    """The read_night table; no triplet at all is an error naming the options."""
    from lipsim.data.night import read_night
    from lipsim.errors import LipSimError

    df = read_night(root, min_votes=min_votes, splits=splits)
    if not len(df):
        raise LipSimError(
            f"no triplets in {root} for --splits {' '.join(splits)} with votes >= {min_votes} "
            "(--min-votes)"
        )
    return df


def triplet_loader(df, image_size: int, batch_size: int, workers: int):
    """Batches in table order: result rows are matched to ids by position (never shuffle)."""
    import torch

    from lipsim.data.night import NightTriplets

    return torch.utils.data.DataLoader(
        NightTriplets(df, image_size), batch_size=batch_size, shuffle=False, num_workers=workers
    )
