"""Suite-wide settings.

Every tensor in the suite is tiny, so one intra-op thread is fastest: with two OpenMP threads on
a machine that is busy with other work, each small op can wait tens of milliseconds for the
second thread, which makes the suite several times slower.
"""

import torch

torch.set_num_threads(1)
