"""An adaptive n-gram model of token ids: counts of what followed each context of up to `order`
tokens, in the run's training split and in the text read so far. `charrnn eval --ngram` mixes
its predictions with the network's (`charrnn.score.mixing`), as compressors mix their models.

The probability of token x after the context c_k of the k tokens before it is interpolated
Witten-Bell, from order 0 (no context) up, starting from a uniform guess over the vocabulary:

    p_k(x) = (n_k(x) + u_k * p_(k-1)(x)) / (N_k + u_k)     where N_k > 0, else p_k = p_(k-1)

n_k(x) is how often x followed c_k, N_k how often c_k was seen, u_k how many different tokens
followed it. Only the probability of the token that comes is needed, so no distribution over the
vocabulary is ever built. Contexts and (context, token) pairs are 64-bit hashes (a collision, at
2^-64 per pair of keys, would merge two counts); the counts live in sorted arrays, one per order.

A block of tokens is scored at once: each token's counts are those of the tables plus those of the
same keys earlier in the block (found by a stable sort), so reading a text in blocks of any size
gives what reading it token by token gives. Memory grows with the distinct n-grams read (at most
about 48 bytes per token per order), which is why `charrnn eval` bounds the tokens it feeds.
"""

from __future__ import annotations

import numpy as np

CONTEXT_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constants: a hash step is h * M + token + 1
PAIR_MULTIPLIER = np.uint64(0xD6E8FEB86659FD93)
EMPTY_CONTEXT = np.uint64(1)


class CountTable:
    """Counts by 64-bit key in one sorted array: keys (K,) uint64, counts (K,) int64."""

    def __init__(self):
        self.keys = np.zeros(0, np.uint64)
        self.counts = np.zeros(0, np.int64)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """keys (M,) -> their counts (M,), 0 for a key never added."""
        if len(self.keys) == 0:
            return np.zeros(len(keys), np.int64)
        where = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[where] == keys, self.counts[where], 0)

    def add(self, keys: np.ndarray, counts: np.ndarray):
        """Add counts (M,) to keys (M,), which need not be distinct."""
        merged, inverse = np.unique(np.concatenate([self.keys, keys]), return_inverse=True)
        totals = np.zeros(len(merged), np.int64)
        np.add.at(totals, inverse, np.concatenate([self.counts, counts]))
        self.keys, self.counts = merged, totals

    def __len__(self) -> int:
        return len(self.keys)


def earlier_occurrences(keys: np.ndarray) -> np.ndarray:
    """keys (M,) -> for each position, how many earlier positions hold the same key (M,)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.ones(len(keys), bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))
    rank = np.empty(len(keys), np.int64)
    rank[order] = np.arange(len(keys)) - group_start
    return rank


def earlier_flagged(keys: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """keys (M,), flags (M,) bool -> for each position, how many earlier positions with the same
    key are flagged (M,)."""
    order = np.argsort(keys, kind="stable")
    ordered, flagged = keys[order], flags[order].astype(np.int64)
    before = np.cumsum(flagged) - flagged  # flagged positions before this one in sorted order
    starts = np.ones(len(keys), bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    at_group_start = np.maximum.accumulate(np.where(starts, before, 0))
    counts = np.empty(len(keys), np.int64)
    counts[order] = before - at_group_start
    return counts


class AdaptiveNGram:
    """Interpolated Witten-Bell over orders 0..`order`, learning every token it reads."""

    def __init__(self, order: int, vocab_size: int):
        self.order, self.vocab_size = order, vocab_size
        self.seen = [CountTable() for _ in range(order + 1)]  # N_k: times each context was seen
        self.distinct = [CountTable() for _ in range(order + 1)]  # u_k: tokens that followed it
        self.pairs = [CountTable() for _ in range(order + 1)]  # n_k(x): times x followed it
        self.reset_history()

    def reset_history(self):
        """Start a new stream: the next token has no context before it (its counts stay)."""
        self.history = np.zeros(0, np.int64)

    def read(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids (M,) -> (the probability of each token given those before it, interpolated up to each
        order (order+1, M) float64, whose last row is the model's; the longest order whose context had
        been seen (M,) int64), then learns the block."""
        ids = np.asarray(ids, np.int64)
        contexts, valid = self.context_hashes(ids)
        pairs = pair_hashes(contexts, ids)
        probabilities = np.empty((self.order + 1, len(ids)))
        below = np.full(len(ids), 1.0 / self.vocab_size)
        longest = np.zeros(len(ids), np.int64)
        for k in range(self.order + 1):
            n, total, distinct = self.counts(k, contexts[k], pairs[k], valid[k])
            known = total > 0
            below = probabilities[k] = np.where(known, (n + distinct * below) / np.maximum(total + distinct, 1), below)
            longest[known] = k
        self.learn(contexts, pairs, valid, ids)
        return probabilities, longest

    def context_hashes(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids (M,) -> the hash of each token's context at each order (order+1, M) uint64, and
        whether that context exists (order+1, M) bool (a stream's first tokens lack the long ones)."""
        stream = np.concatenate([self.history, ids]).astype(np.uint64)
        offset, count = len(self.history), len(ids)
        hashes = np.empty((self.order + 1, count), np.uint64)
        valid = np.empty((self.order + 1, count), bool)
        hashes[0], valid[0] = EMPTY_CONTEXT, True
        positions = np.arange(count)
        for k in range(1, self.order + 1):
            source = offset + positions - k
            valid[k] = source >= 0
            hashes[k] = hashes[k - 1] * CONTEXT_MULTIPLIER + stream[np.maximum(source, 0)] + np.uint64(1)
        return hashes, valid

    def counts(self, k: int, contexts: np.ndarray, pairs: np.ndarray, valid: np.ndarray):
        """The counts n_k(x), N_k and u_k (each (M,) int64) that each token of a block is scored
        with, from its context and (context, token) hashes at order k (M,): the tables' plus those
        of its block before it; 0 where the context does not exist."""
        pair_table, pair_earlier = self.pairs[k].lookup(pairs), earlier_occurrences(np.where(valid, pairs, 0))
        new_pair = (pair_earlier == 0) & (pair_table == 0) & valid
        n = pair_table + pair_earlier
        total = self.seen[k].lookup(contexts) + earlier_occurrences(np.where(valid, contexts, 0))
        distinct = self.distinct[k].lookup(contexts) + earlier_flagged(contexts, new_pair)
        return np.where(valid, n, 0), np.where(valid, total, 0), np.where(valid, distinct, 0)

    def learn(self, contexts: np.ndarray, pairs: np.ndarray, valid: np.ndarray, ids: np.ndarray):
        """Add the block's n-grams (context and pair hashes, (order+1, M) each) to the tables and keep
        its last tokens as the next block's history."""
        for k in range(self.order + 1):
            context = contexts[k][valid[k]]
            unique_pairs, first, repeats = np.unique(pairs[k][valid[k]], return_index=True, return_counts=True)
            new = self.pairs[k].lookup(unique_pairs) == 0
            self.distinct[k].add(context[first[new]], np.ones(int(new.sum()), np.int64))
            self.pairs[k].add(unique_pairs, repeats)
            self.seen[k].add(context, np.ones(len(context), np.int64))
        self.history = np.concatenate([self.history, ids])[-self.order:] if self.order else self.history

    def prime(self, ids: np.ndarray, block: int = 1 << 20):
        """Learn a stream (N,) without scoring it, in blocks; the next stream starts afresh."""
        for begin in range(0, len(ids), block):
            chunk = np.asarray(ids[begin: begin + block], np.int64)
            contexts, valid = self.context_hashes(chunk)
            self.learn(contexts, pair_hashes(contexts, chunk), valid, chunk)
        self.reset_history()


def pair_hashes(contexts: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Context hashes (..., M) uint64 and the tokens after them (M,) -> (context, token) hashes (..., M)."""
    return contexts * PAIR_MULTIPLIER + np.asarray(ids).astype(np.uint64) + np.uint64(1)
