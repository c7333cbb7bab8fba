"""The audit's duplicate search: byte-identical and near-identical files, label conflicts, leakage.

Byte-identical files share a BLAKE2b digest; near-identical ones (resized or
re-compressed copies) have 256-bit perceptual hashes at most :data:`NEAR_BITS`
bits apart and mean colours within :data:`COLOUR_TOL` levels per channel
(see :mod:`ftcore.data.audit` for the hash and the measurements behind the
bound). Copies form groups (union-find); a group within one class is kept
once, across classes it is a label conflict and every copy is left out, and a
validation copy of a training image (leakage) is dropped from validation.
"""

from __future__ import annotations

import numpy as np

from ftcore.data._report import AuditItem
from ftcore.data.scan import Problem

#: Near-identical: 256-bit perceptual hashes at most this many bits apart (and mean colours within 8 levels).
NEAR_BITS = 15
#: Near-identical copies have mean colours within this many levels (of 255) per channel.
COLOUR_TOL = 8.0


def near_pairs(hashes: np.ndarray, max_bits: int) -> list[tuple[int, int]]:
    """Index pairs whose 256-bit hashes differ in at most `max_bits` (< 16) bits.

    Multi-index hashing (Norouzi et al., 2012): split each hash into 16
    blocks of 16 bits; two hashes within 15 bits agree on at least one whole
    block (pigeonhole), so only rows sharing a block value are compared.

    Parameters
    ----------
    hashes : numpy.ndarray of uint64, shape (n, 4)
        One 256-bit hash a row.
    max_bits : int
        Largest Hamming distance of a pair, below 16.

    Returns
    -------
    list of (int, int)
        Sorted pairs ``(i, j)`` with ``i < j``.
    """
    blocks = hashes.view(np.uint16)
    found: set[tuple[int, int]] = set()
    for b in range(blocks.shape[1]):
        order = np.argsort(blocks[:, b], kind="stable")
        col = blocks[order, b]
        cuts = np.flatnonzero(np.diff(col)) + 1
        for idx in np.split(order, cuts):
            if len(idx) < 2:
                continue
            h = hashes[idx]
            d = np.bitwise_count(h[:, None, :] ^ h[None, :, :]).sum(-1)
            for x, y in zip(*np.nonzero(np.triu(d <= max_bits, 1))):
                found.add((int(idx[x]), int(idx[y])))
    return sorted(found)


def _copy_groups(items: list[AuditItem]) -> list[list[int]]:
    """Indices of the usable items that are copies of each other, one list a group of two or more."""
    ok = [i for i, it in enumerate(items) if it.usable]
    parent = {i: i for i in ok}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    by_sha: dict[bytes, int] = {}
    for i in ok:
        j = by_sha.setdefault(items[i].sha, i)
        if j != i:
            union(j, i)
    if ok:
        hashes = np.stack([items[i].phash for i in ok])
        for a, b in near_pairs(hashes, NEAR_BITS):
            i, j = ok[a], ok[b]
            if np.abs(items[i].colour - items[j].colour).max() <= COLOUR_TOL:
                union(i, j)
    groups: dict[int, list[int]] = {}
    for i in ok:
        groups.setdefault(find(i), []).append(i)
    return [members for members in groups.values() if len(members) > 1]


def resolve_duplicates(items: list[AuditItem], problems: list[Problem]) -> None:
    """Leave out all but one copy of each image, and every copy of one found in two classes.

    Parameters
    ----------
    items : list of AuditItem
        Decoded files (``sha``, ``phash`` and ``colour`` set where usable);
        ``usable`` is cleared on the copies left out.
    problems : list of Problem
        Appended with a ``duplicate``, ``label_conflict`` or ``leakage``
        problem (action ``skipped``) per copy left out.
    """
    order = {"all": 0, "train": 0, "val": 1}
    for members in _copy_groups(items):
        members.sort(key=lambda i: (order[items[i].split], items[i].path))
        first = items[members[0]]
        same_bytes = all(items[i].sha == first.sha for i in members)
        word = "byte-identical" if same_bytes else "near-identical (same perceptual hash)"
        names = sorted({items[i].class_name for i in members})
        if len(names) > 1:
            where = ", ".join(f"'{items[i].class_name}' ({items[i].path})" for i in members)
            for i in members:
                items[i].usable = False
                problems.append(Problem(items[i].path, "label_conflict", f"{word} copies of one image are in "
                                        f"different classes: {where}; an image cannot be both, so all "
                                        f"{len(members)} copies are left out. Keep it in its right class only.",
                                        "skipped"))
            continue
        for i in members[1:]:
            it = items[i]
            it.usable = False
            if it.split == "val" and first.split == "train":
                problems.append(Problem(it.path, "leakage", f"{word} copy of the training image {first.path}: "
                                        "dropped from validation, so no metric is measured on a training image",
                                        "skipped"))
            else:
                problems.append(Problem(it.path, "duplicate", f"{word} copy of {first.path} in class "
                                        f"'{it.class_name}': kept once", "skipped"))
