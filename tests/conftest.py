"""Suite-wide settings.

Every tensor in the suite is tiny, so one intra-op thread is fastest: with two OpenMP threads on
a machine that is busy with other work, each small op can wait tens of milliseconds for the
second thread, which makes the suite several times slower.
"""

import torch

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_token_cache(tmp_path_factory: pytest.TempPathFactory):
    """Token caches go to a fresh folder, never to the user's ~/.cache/neuralab."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEURALAB_CACHE", str(tmp_path_factory.mktemp("neuralab-cache")))
        yield
