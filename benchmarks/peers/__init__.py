"""Peer baselines: plain scripts that follow published recipes faithfully, with no neuralab import.

Each script trains, evaluates on the test split after every epoch, and prints one JSON line
(`PEER_RESULT {...}`) with the per-epoch curve: cumulative training seconds (evaluation excluded)
and test accuracy. `benchmarks.mnist_peers` runs them side by side with neuralab.
"""
